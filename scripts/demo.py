"""`make run`: the demo. Starts an OpenAI-compatible upstream (:8001), a real Triton with small
Python models (:8000), and Envoy with the gateway (envoy/envoy.yaml, :4000; with
GATEWAY_RUNTIME=native, envoy/envoy.native.yaml and the dynamic module); with
PROMETHEUS=1 also a Prometheus (:9090) scraping it with examples/observability's config and
alert rules. Ctrl-C stops all."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "integration"
PORTS = {"gateway": 4000, "admin": 9901, "openai-compatible upstream": 8001,
         "triton http": 8000, "triton grpc": 8101, "triton metrics": 8102}
WITH_PROMETHEUS = os.environ.get("PROMETHEUS") == "1"
if WITH_PROMETHEUS:
    PORTS["prometheus"] = 9090

PROMETHEUS_NOTE = """
Prometheus: http://127.0.0.1:9090 (scraping the gateway every 15 s; its alerts under /alerts).
Try:  sum by (model_group) (rate(llm_gateway_requests[5m]))
Grafana: import examples/observability/grafana-dashboard.json and pick this Prometheus as its
datasource (see the README's Observability section).
"""

EXAMPLES = """
The gateway is up on http://127.0.0.1:4000 (master key sk-1234). Try:

  # chat, routed to the OpenAI-compatible demo upstream through the alias gpt-4o-mini
  curl -s localhost:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'

  # chat on a real Triton (/generate), then streamed (/generate_stream)
  curl -s localhost:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \\
    -d '{"model":"triton-echo","messages":[{"role":"user","content":"Hello!"}]}'
  curl -sN localhost:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \\
    -d '{"model":"triton-echo","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

  # embeddings on Triton (/infer), the model list, and the OpenAI SDK
  curl -s localhost:4000/v1/embeddings -H 'Authorization: Bearer sk-1234' \\
    -d '{"model":"triton-embed","input":["hello world"]}'
  curl -s localhost:4000/v1/models -H 'Authorization: Bearer sk-1234'
  .venv/bin/python examples/openai_sdk.py

Envoy admin (stats, Prometheus at /stats/prometheus): http://127.0.0.1:9901   Ctrl-C stops everything.
"""


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait(check, timeout, what, procs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise SystemExit(f"{name} exited early (status {p.returncode}); see the output above")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} was not ready after {timeout}s")


def main():
    busy = [f"{name} ({port})" for name, port in PORTS.items() if not port_free(port)]
    if busy:
        raise SystemExit("ports in use, stop what holds them first: " + ", ".join(busy))
    envoy = os.environ.get("ENVOY_BIN", "envoy")
    procs = []

    def stop(*_):
        for _, p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        procs.append(("openai-compatible upstream", subprocess.Popen(
            [sys.executable, str(TESTS / "mock_openai.py"), "--port", "8001", "--name", "demo"])))
        procs.append(("triton", subprocess.Popen(
            [sys.executable, str(TESTS / "triton_server.py"), "--http-port", "8000",
             "--grpc-port", "8101", "--metrics-port", "8102"], stdout=subprocess.DEVNULL)))
        print("starting Triton (about 10 s to load its three models)...", flush=True)
        wait(lambda: all(requests.get(f"http://127.0.0.1:8000/v2/models/{m}/ready", timeout=1).ok
                         for m in ("echo", "echo_stream", "embed")), 180, "Triton", procs)
        # RUNTIME=native: the same demo on the dynamic module (envoy/envoy.native.yaml).
        native = os.environ.get("GATEWAY_RUNTIME") == "native"
        config = "envoy/envoy.native.yaml" if native else "envoy/envoy.yaml"
        env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(ROOT / "target" / "release")}
        procs.append(("envoy", subprocess.Popen(
            [envoy, "-c", config, "--concurrency", "2", "-l", "warning"], cwd=ROOT, env=env)))
        wait(lambda: requests.get("http://127.0.0.1:9901/ready", timeout=1).ok, 30, "Envoy", procs)
        if WITH_PROMETHEUS:
            data = ROOT / ".run" / "prometheus"
            data.mkdir(parents=True, exist_ok=True)
            procs.append(("prometheus", subprocess.Popen(
                ["prometheus", f"--config.file={ROOT / 'examples/observability/prometheus.yml'}",
                 f"--storage.tsdb.path={data}", "--web.listen-address=127.0.0.1:9090"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            wait(lambda: requests.get("http://127.0.0.1:9090/-/ready", timeout=1).ok, 30, "Prometheus", procs)
        print(EXAMPLES + (PROMETHEUS_NOTE if WITH_PROMETHEUS else ""), flush=True)
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.5)
        dead = [name for name, p in procs if p.poll() is not None]
        print(f"{', '.join(dead)} stopped; shutting the demo down", flush=True)
    finally:
        stop()


if __name__ == "__main__":
    main()
