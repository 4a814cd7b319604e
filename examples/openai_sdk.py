"""The OpenAI Python SDK against the gateway (`make run` first).

    .venv/bin/python examples/openai_sdk.py [base_url] [api_key]
"""

import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4000/v1"
api_key = sys.argv[2] if len(sys.argv) > 2 else "sk-1234"
client = OpenAI(base_url=base_url, api_key=api_key)

print("models:", [m.id for m in client.models.list()])

reply = client.chat.completions.create(
    model="triton-echo", messages=[{"role": "user", "content": "Who are you?"}], max_tokens=32)
print("triton chat:", reply.choices[0].message.content, reply.usage)

print("triton stream:", end=" ", flush=True)
for chunk in client.chat.completions.create(
        model="triton-echo", messages=[{"role": "user", "content": "Stream, please."}], stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
print("openai-compatible chat:", reply.choices[0].message.content)

emb = client.embeddings.create(model="triton-embed", input=["hello world", "gateway"])
print("triton embeddings:", [d.embedding for d in emb.data])
