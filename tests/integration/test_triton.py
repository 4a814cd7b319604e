"""Triton paths against a real Triton Inference Server (PyTriton) behind the real Envoy + .wasm.

The Triton models (triton_server.py) answer with a digest of the prompt they received, reject
wrong datatypes (Triton enforces declared dtypes), fail on a missing max_tokens or on arrays
in request parameters, and echo the prompt unless told not to, so these tests see exactly
what the gateway sent."""

import base64
import hashlib
import json
import struct

import pytest
import requests

from conftest import stream_events

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]


def chatml(messages):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def answer(prompt, max_tokens=64):
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    words = f"prompt #{digest} has {len(prompt)} chars . the answer is 42 .".split(" ")
    return " ".join(words[:max_tokens]), ("length" if len(words) > max_tokens else "stop"), len(words[:max_tokens])


@pytest.fixture(scope="module")
def gw(triton, mock_a):
    from harness import Gateway
    base = f"http://127.0.0.1:{triton.port}/v2/models"
    cfg = {"model_list": [
        {"model_name": "gen", "litellm_params": {"model": "triton/echo", "api_base": f"{base}/echo_stream/generate",
                                                 "prompt_template": "chatml", "max_tokens": 64}},
        {"model_name": "infer", "litellm_params": {"model": "triton/echo", "api_base": f"{base}/echo/infer",
                                                   "prompt_template": "chatml"}},
        {"model_name": "emb", "litellm_params": {"model": "triton/embed", "api_base": f"{base}/embed/infer"}},
        {"model_name": "emb-url", "litellm_params": {"model": "triton/embed", "api_base": f"{base}/embed/embeddings"}},
        {"model_name": "missing", "litellm_params": {"model": "triton/nope", "api_base": f"{base}/nope/generate"}},
        {"model_name": "llama", "litellm_params": {"model": "triton/Meta-Llama-3-8B", "api_base": f"{base}/echo_stream/generate"}},
    ]}
    gw = Gateway(cfg, [triton.port])
    yield gw
    gw.stop()


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def error_of(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_chat_generate_flattens_every_message(gw):
    body = ok(requests.post(f"{gw.url}/v1/chat/completions", json={"model": "gen", "messages": CHAT}))
    text, finish, n = answer(chatml(CHAT))
    assert body["object"] == "chat.completion" and body["model"] == "gen"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert body["choices"][0]["finish_reason"] == finish
    assert body["usage"]["completion_tokens"] == n  # the backend's own count
    assert body["id"].startswith("chatcmpl-")


def test_llama3_template_is_inferred_from_the_model_name(gw):
    body = ok(requests.post(f"{gw.url}/v1/chat/completions", json={"model": "llama", "messages": CHAT}))
    prompt = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert body["choices"][0]["message"]["content"] == answer(prompt)[0]


def test_max_tokens_and_length(gw):
    body = ok(requests.post(f"{gw.url}/v1/chat/completions", json={"model": "gen", "messages": CHAT, "max_tokens": 3}))
    text, finish, _ = answer(chatml(CHAT), 3)
    assert body["choices"][0]["message"]["content"] == text
    assert body["choices"][0]["finish_reason"] == "length" == finish


def test_completion_sends_prompt_as_is(gw):
    body = ok(requests.post(f"{gw.url}/v1/completions", json={"model": "gen", "prompt": "Once upon"}))
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == answer("Once upon")[0]


def test_stop_sequences_are_enforced(gw):
    body = ok(requests.post(f"{gw.url}/v1/chat/completions",
                            json={"model": "gen", "messages": CHAT, "stop": ["answer"], "temperature": 0.3, "seed": 7}))
    full = answer(chatml(CHAT))[0]
    assert body["choices"][0]["message"]["content"] == full[: full.index("answer")]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_stream_is_incremental_and_ends_with_done(gw):
    req = {"model": "gen", "messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}
    resp, events = stream_events(gw.url, "/v1/chat/completions", req)
    assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    expected, finish, n = answer(chatml(CHAT))
    assert text == expected
    assert chunks[-2]["choices"][0]["finish_reason"] == finish
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == n
    assert len({c["id"] for c in chunks}) == 1
    # The model yields a word every 0.2 s; buffering would deliver everything at once.
    content_times = [t for (t, d), c in zip(events, chunks) if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert content_times[-1] - content_times[0] > 1.0


def test_completion_stream(gw):
    resp, events = stream_events(gw.url, "/v1/completions", {"model": "gen", "prompt": "Once upon", "stream": True})
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == answer("Once upon")[0]


def test_mid_stream_error_becomes_error_event_then_done(gw):
    req = {"model": "gen", "messages": [{"role": "user", "content": "please explode"}], "stream": True}
    resp, events = stream_events(gw.url, "/v1/chat/completions", req)
    assert resp.status == 200
    assert events[-1][1] == "[DONE]"
    last = json.loads(events[-2][1])
    assert "exploded mid-stream" in last["error"]["message"]
    assert [d for _, d in events].count("[DONE]") == 1


def test_model_failure_is_an_openai_error(gw):
    # Triton 2.51 answers 400 for an exception in a decoupled Python model; the status is kept.
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "gen", "messages": [{"role": "user", "content": "explode-now"}]}), 400)
    assert err["message"] == "RuntimeError: the model exploded"


def test_compressed_upstream_answers_are_never_passed_on_garbled(gw):
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "infer", "messages": CHAT},
                      headers={"accept-encoding": "gzip, deflate"})
    assert r.status_code == 200, r.text
    assert "content-encoding" not in r.headers


def test_unknown_triton_model_is_404(gw):
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions", json={"model": "missing", "messages": CHAT}), 404)
    assert "unknown model" in err["message"]


def test_infer_chat_and_fake_stream(gw):
    body = ok(requests.post(f"{gw.url}/v1/chat/completions", json={"model": "infer", "messages": CHAT, "temperature": 0.5}))
    assert body["choices"][0]["message"]["content"] == answer(chatml(CHAT))[0]
    resp, events = stream_events(gw.url, "/v1/chat/completions", {"model": "infer", "messages": CHAT, "stream": True})
    assert resp.status == 200 and events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == answer(chatml(CHAT))[0]


def test_embeddings_url_mode_posts_kserve_body_to_that_url(gw):
    # LiteLLM's ".../embeddings" mode posts the KServe body to the URL as given; a plain Triton
    # has no such route, and its 404 reaches the client as an OpenAI error.
    err = error_of(requests.post(f"{gw.url}/v1/embeddings", json={"model": "emb-url", "input": "x"}), 404)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["emb"])
def test_embeddings_float_and_base64(gw, model):
    inputs = ["hello world", "a b c", "x"]
    body = ok(requests.post(f"{gw.url}/v1/embeddings", json={"model": model, "input": inputs}))
    assert body["object"] == "list" and body["model"] == model
    rows = [d["embedding"] for d in body["data"]]
    assert rows == [[float(len(t)), float(t.count(" ")), 1.0, -0.5] for t in inputs]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    body = ok(requests.post(f"{gw.url}/v1/embeddings", json={"model": model, "input": "hello world",
                                                               "encoding_format": "base64"}))
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == [11.0, 1.0, 1.0, -0.5]


def test_unsupported_params_are_named(gw):
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions",
                                 json={"model": "gen", "messages": CHAT, "n": 2, "logit_bias": {"5": 1}}), 400)
    assert "n, logit_bias" in err["message"]
    error_of(requests.post(f"{gw.url}/v1/embeddings", json={"model": "gen", "input": "x"}), 400)


def test_openai_sdk_against_triton(gw):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused")
    out = client.chat.completions.create(model="gen", messages=CHAT)
    assert out.choices[0].message.content == answer(chatml(CHAT))[0]
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="gen", messages=CHAT, stream=True) if c.choices)
    assert streamed == answer(chatml(CHAT))[0]
    # The SDK asks for base64 itself and decodes it.
    emb = client.embeddings.create(model="emb", input=["hello world"])
    assert emb.data[0].embedding == [11.0, 1.0, 1.0, -0.5]
