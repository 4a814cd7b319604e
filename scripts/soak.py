"""`make soak`: SOAK_SECONDS (default 600) of mixed load on the real Envoy + .wasm at
--concurrency 2 — normal and malformed requests, streaming and not, OpenAI-compatible and
Triton — then prints the errors seen, wasm VM restarts, and Envoy's memory at start and end.
Bounded in time and concurrency; loopback only."""

import os
import random
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import mock_openai  # noqa: E402
from harness import Gateway, TritonServer  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
WORKERS = 8


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    mock, recorder = mock_openai.start(name="soak")
    triton = TritonServer()
    base = f"http://127.0.0.1:{triton.port}/v2/models"
    cfg = {"model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{mock.server_port}"}},
        {"model_name": "gen", "litellm_params": {"model": "triton/echo", "api_base": f"{base}/echo_stream/generate"}},
        {"model_name": "emb", "litellm_params": {"model": "triton/embed", "api_base": f"{base}/embed/infer"}}],
        "litellm_settings": {"cache": True},
        "general_settings": {"master_key": "sk-soak"}}
    gw = Gateway(cfg, [mock.server_port, triton.port])
    mock_openai.STREAM_INTERVAL = 0.01
    auth = {"Authorization": "Bearer sk-soak"}
    chat = [{"role": "user", "content": "soak"}]
    cases = [
        ("chat", lambda s: s.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": chat}, headers=auth), 200),
        ("chat-stream", lambda s: s.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": chat, "stream": True}, headers=auth), 200),
        ("triton", lambda s: s.post(f"{gw.url}/v1/chat/completions", json={"model": "gen", "messages": chat, "max_tokens": 3}, headers=auth), 200),
        ("triton-stream", lambda s: s.post(f"{gw.url}/v1/completions", json={"model": "gen", "prompt": "x", "max_tokens": 2, "stream": True}, headers=auth), 200),
        ("embeddings", lambda s: s.post(f"{gw.url}/v1/embeddings", json={"model": "emb", "input": ["a", "b"]}, headers=auth), 200),
        ("malformed", lambda s: s.post(f"{gw.url}/v1/chat/completions", data=random.randbytes(random.randint(0, 300)), headers=auth), 400),
        ("unknown-model", lambda s: s.post(f"{gw.url}/v1/chat/completions", json={"model": "nope", "messages": chat}, headers=auth), 404),
        ("no-key", lambda s: s.get(f"{gw.url}/v1/models"), 401),
    ]
    start_rss = rss_kb(gw.proc.pid)
    vms_before = gw.stats("wasm.envoy.wasm.runtime.v8.created")
    counts = {name: 0 for name, _, _ in cases}
    unexpected = {}
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def worker(seed):
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            name, call, expected = rng.choice(cases)
            try:
                status = call(session).status_code
            except requests.RequestException as e:
                status = type(e).__name__
            with lock:
                counts[name] += 1
                if status != expected:
                    unexpected[(name, status)] = unexpected.get((name, status), 0) + 1
            recorder.take()

    print(f"soak: {SECONDS:.0f}s, {WORKERS} clients, Envoy pid {gw.proc.pid}, RSS {start_rss} kB", flush=True)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end_rss = rss_kb(gw.proc.pid)
    vms_after = gw.stats("wasm.envoy.wasm.runtime.v8.created")
    total = sum(counts.values())
    print(f"requests: {total} ({total / SECONDS:.0f}/s)  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"unexpected answers: {sum(unexpected.values())} " + (str(unexpected) if unexpected else ""))
    print(f"wasm VMs created: before {vms_before}, after {vms_after} (a difference means a VM failed)")
    print(f"Envoy RSS: start {start_rss} kB, end {end_rss} kB")
    gw.stop()
    triton.stop()
    mock.shutdown()
    sys.exit(1 if unexpected or vms_after != vms_before else 0)


if __name__ == "__main__":
    main()
