"""The LiteLLM SDK against the gateway, as an OpenAI-compatible server (`make run` first).

    .venv/bin/python examples/litellm_sdk.py [base_url] [api_key]

LiteLLM users keep their code: `openai/<model>` with `api_base` set to the gateway.
"""

import sys

import litellm

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4000/v1"
api_key = sys.argv[2] if len(sys.argv) > 2 else "sk-1234"

reply = litellm.completion(model="openai/triton-echo", api_base=base_url, api_key=api_key,
                           messages=[{"role": "user", "content": "Who are you?"}], max_tokens=32)
print("triton chat:", reply.choices[0].message.content)

print("triton stream:", end=" ", flush=True)
for chunk in litellm.completion(model="openai/triton-echo", api_base=base_url, api_key=api_key,
                                messages=[{"role": "user", "content": "Stream, please."}], stream=True):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

reply = litellm.completion(model="openai/gpt-4o-mini", api_base=base_url, api_key=api_key,
                           messages=[{"role": "user", "content": "Hi"}])
print("openai-compatible chat:", reply.choices[0].message.content)

emb = litellm.embedding(model="openai/triton-embed", api_base=base_url, api_key=api_key, input=["hello world"])
print("triton embeddings:", [d["embedding"] for d in emb.data])
