"""Hardening on the real Envoy at --concurrency 2: a bounded storm of malformed requests, then
proof that every worker still serves (no wasm VM failed), plus upstream faults and injection."""

import json
import os
import random
import socket
from concurrent.futures import ThreadPoolExecutor

import requests

from harness import NATIVE, free_port, stat_prefix

MASTER = "sk-storm"
STORM_REQUESTS = int(os.environ.get("STORM_REQUESTS", "2000"))


def raw(gw, data, read=True, timeout=5):
    """Send raw bytes; the status code answered, or None when the connection closed silently."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return None
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
        except (socket.timeout, ConnectionResetError):
            return None
    return int(buf.split(b" ", 2)[1])


def request_bytes(method, path, body=b"", headers=()):
    head = [f"{method} {path} HTTP/1.1".encode(), b"host: gw", b"connection: close",
            b"authorization: Bearer " + MASTER.encode()]
    head += list(headers)
    if body is not None:
        head.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")


def malformed_cases(rng):
    """Yields (name, raw request bytes)."""
    chat = "/v1/chat/completions"
    bodies = [
        b"", b"{", b"}", b"null", b"[]", b"[1,2]", b"\"str\"", b"12", b"{\"model\":",
        b'{"model":1,"messages":"x"}', b'{"model":"chat","messages":[1,2]}',
        b'{"model":"chat","messages":[{"role":5}]}', b'{"model":"chat","messages":[{}]}',
        b'{"model":"chat","messages":[{"role":"user","content":{"a":1}}]}',
        b'{"model":"tri","messages":[{"role":"user","content":[{"type":"image_url"}]}]}',
        b'{"model":"tri","messages":[{"role":"wizard","content":"x"}]}',
        b'{"model":"tri","prompt":[[1,2],[3]]}', b'{"model":"tri","prompt":"x","n":5}',
        b'{"model":"chat","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
        b'{"model":"chat","messages":[{"role":"user","content":"x"}],"timeout":"soon"}',
        b'{"model":"chat","messages":[{"role":"user","content":"x"}],"fallbacks":{"a":1}}',
        b'{"model":"chat","messages":[{"role":"user","content":"x"}],"cache":[1]}',
        b'{"model":"\xff\xfe","messages":[]}', b'{"model":"chat","messages":[{"role":"user","content":"\xc3\x28"}]}',
        b'{"model":"chat\\u0000\\r\\nx-evil: 1","messages":[{"role":"user","content":"x"}]}',
        b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"model":"chat","messages":[{"role":"user","content":"' + b"x" * 300_000 + b'"}]}',
        b'{"model":"chat","model":"chat","messages":[{"role":"user","content":"x"}]}',
    ]
    for b in bodies:
        yield "body", request_bytes("POST", chat, b, [b"content-type: application/json"])
        yield "body-embeddings", request_bytes("POST", "/v1/embeddings", b)
        yield "body-key", request_bytes("POST", "/key/generate", b)
        yield "body-vllm", request_bytes("POST", "/vllm/score", b)
    for method, path in [("PUT", chat), ("DELETE", "/v1/models"), ("GET", "/v1/embeddings"),
                         ("GET", "/../../etc/passwd"), ("GET", "/v1/models/%00%ff"), ("GET", "/key/info?key=%zz"),
                         ("OPTIONS", "/"), ("GET", "/vllm/../../admin"), ("PATCH", "/health"),
                         ("GET", "/v1/models/" + "a" * 5000)]:
        yield "method-path", request_bytes(method, path, None)
    yield "bad-utf8-header", request_bytes("POST", chat, b"{}", [b"x-api-key: \xff\xfe\xfd"])
    yield "bad-utf8-auth", request_bytes("GET", "/v1/models", None, [b"api-key: \xc3\x28"])
    # Header names that are not tokens: whatever reaches the filter must not take its VM down.
    yield "bad-utf8-header-name", request_bytes("POST", chat, b"{}", [b"x-b\xffad: v"])
    yield "non-ascii-header-name", request_bytes("POST", chat, b"{}", [b"x-\xc3\xa9: v"])
    yield "duplicate-auth", request_bytes("GET", "/v1/models", None, [b"authorization: Bearer other"])
    yield "huge-header", request_bytes("GET", "/v1/models", None, [b"x-big: " + b"a" * 70_000])
    yield "many-headers", request_bytes("GET", "/v1/models", None, [f"x-h{i}: v".encode() for i in range(200)])
    yield "client-envoy-headers", request_bytes("POST", chat, b'{"model":"chat","messages":[{"role":"user","content":"x"}]}',
                                                [b"x-llm-cluster: 127.0.0.1:1", b"x-envoy-upstream-rq-timeout-ms: 1",
                                                 b"x-envoy-retry-on: 5xx"])
    for _ in range(20):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        yield "random-body", request_bytes("POST", chat, junk)


def test_malformed_storm_then_every_worker_still_serves(gateway_factory, mock_a, triton):
    cfg = {"model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{mock_a[0]}"}},
        {"model_name": "tri", "litellm_params": {"model": "triton/echo",
                                                 "api_base": f"http://127.0.0.1:{triton.port}/v2/models/echo/generate"}}],
        "litellm_settings": {"cache": True},
        "general_settings": {"master_key": MASTER, "max_request_body_bytes": 200_000}}
    gw = gateway_factory(cfg, [mock_a[0], triton.port])
    vms_before = gw.stats("wasm.envoy.wasm.runtime.v8.created")  # empty for the native build
    rng = random.Random(1234)
    cases = list(malformed_cases(rng))
    plan = [cases[i % len(cases)] for i in range(STORM_REQUESTS)]
    # Cut-short bodies: content-length promises more than is sent, then the client leaves.
    cut = request_bytes("POST", "/v1/chat/completions", b'{"model":"chat"')
    cut = cut.replace(b"content-length: 15", b"content-length: 500")

    def send(case):
        name, data = case
        status = raw(gw, data)
        return name, status

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, plan))
        list(pool.map(lambda _: raw(gw, cut, read=False), range(50)))
    unanswered = [name for name, status in results if status is None]
    assert not unanswered, f"{len(unanswered)} malformed requests got no HTTP answer: {set(unanswered)}"
    assert all(status in (200, 400, 401, 403, 404, 405, 413, 429, 431, 502, 503) for _, status in results), \
        sorted({s for _, s in results})
    assert not any(status >= 500 for name, status in results if name.startswith("body")), \
        "no malformed body may cause a server error"
    mock_a[1].take()
    # Every worker still serves: fresh connections spread over both workers.
    for _ in range(40):
        r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "ok"}]},
                          headers={"Authorization": f"Bearer {MASTER}", "connection": "close"})
        assert r.status_code == 200, r.text
    mock_a[1].take()
    assert gw.stats("wasm.envoy.wasm.runtime.v8.created") == vms_before, "a wasm VM was re-created (one failed)"
    assert all(v == "0" for v in gw.stats("wasm.llm_gateway.vm_reload_failure").values())
    if NATIVE:
        assert gw.proc.poll() is None, "the native module took Envoy down"
    assert "panicked" not in gw.logs() and "wasm trap" not in gw.logs().lower()


def test_injection_never_reaches_headers_paths_or_stats(gateway_factory, mock_a):
    evil = "evil\r\nx-injected: 1/../é"
    cfg = {"model_list": [{"model_name": evil, "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{mock_a[0]}"},
                           "model_info": {"id": "dep\nx-bad: 2"}}],
           "general_settings": {"virtual_keys": [{"key": "sk-k", "key_alias": "alias\r\nx: y"}]}}
    gw = gateway_factory(cfg, [mock_a[0]])
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": evil, "messages": [{"role": "user", "content": "x"}]},
                      headers={"Authorization": "Bearer sk-k", "x-llm-cluster": "127.0.0.1:1"})
    assert r.status_code == 200, r.text
    assert "x-injected" not in r.headers and "x-bad" not in r.headers
    assert r.headers["x-llm-model-group"] == "evil%0D%0Ax-injected: 1/../%C3%A9"
    assert r.headers["x-llm-deployment"] == "dep%0Ax-bad: 2"
    (seen,) = mock_a[1].take()
    assert seen["path"] == "/v1/chat/completions"
    names = [n for n in gw.stats(stat_prefix())]
    assert names and all(".." not in n and "\n" not in n and "/" not in n for n in names), names


def test_upstream_faults_become_openai_errors(gateway_factory, fault_upstream):
    port, _ = fault_upstream
    cfg = {"model_list": [
        {"model_name": mode, "litellm_params": {"model": f"openai/{mode}", "api_base": f"http://127.0.0.1:{port}", "timeout": 2}}
        for mode in ("garbage", "html200", "reset", "huge", "hang")] + [
        {"model_name": "stream-reset", "litellm_params": {"model": "openai/stream-reset", "api_base": f"http://127.0.0.1:{port}"}},
        {"model_name": "tri-garbage", "litellm_params": {"model": "triton/x", "api_base": f"http://127.0.0.1:{port}/v2/models/x/generate"}},
        {"model_name": "tri-stream-reset", "litellm_params": {"model": "triton/x",
                                                               "api_base": f"http://127.0.0.1:{port}/v2/models/x/generate"}}],
        "router_settings": {"num_retries": 0}}
    gw = gateway_factory(cfg, [port])

    def chat(model, **extra):
        return requests.post(f"{gw.url}/v1/chat/completions",
                             json={"model": model, "messages": [{"role": "user", "content": "x"}], **extra}, timeout=20)

    for model, statuses in [("garbage", {502, 503}), ("reset", {502, 503}), ("hang", {408}), ("tri-garbage", {502}),
                            ("html200", {502})]:
        r = chat(model)
        assert r.status_code in statuses, (model, r.status_code, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, model
    r = chat("huge")
    assert r.status_code == 200 and len(r.content) > 5_000_000
    # A stream the upstream breaks off after its headers: Envoy cuts the client's stream too (no
    # filter can add an error event then); the client keeps what arrived, the failure is counted.
    r = requests.post(f"{gw.url}/v1/chat/completions",
                      json={"model": "tri-stream-reset", "messages": [{"role": "user", "content": "x"}], "stream": True},
                      stream=True, timeout=20)
    received = b""
    try:
        for chunk in r.iter_content(None):
            received += chunk
    except requests.exceptions.ChunkedEncodingError:
        pass
    assert r.status_code == 200 and b"partial" in received
    from test_metrics import prometheus
    failures = {n: v for n, v in prometheus(gw).items() if n.startswith('llm_gateway_errors{model_group="tri-stream-reset"')}
    assert failures and all(v == 1 for v in failures.values()), failures
    r = requests.get(f"{gw.url}/v1/models")
    assert r.status_code == 200, "the gateway keeps serving"
