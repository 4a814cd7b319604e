"""Start the real Envoy with the real gateway (and a real Triton) on free loopback ports.

The Envoy config is the shipped `envoy/envoy.yaml` (the .wasm) or, with
`GATEWAY_RUNTIME=native`, `envoy/envoy.native.yaml` (the dynamic module,
target/release/libllm_gateway.so), with its ports, clusters and gateway JSON replaced, so
tests exercise the wiring users run. `make integration` runs the suite once per runtime.
"""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "llm_gateway.wasm"
NATIVE_DIR = ROOT / "target" / "release"
HERE = Path(__file__).resolve().parent
# Which build of the gateway the suite runs against: "wasm" or "native".
RUNTIME = os.environ.get("GATEWAY_RUNTIME", "wasm")
NATIVE = RUNTIME == "native"


def gateway_filter(hcm):
    """The gateway's filter in an HCM config, whichever the runtime."""
    return hcm["http_filters"][0]


def gateway_json_holder(hcm):
    """(dict, key) holding the gateway JSON string in the filter's config."""
    typed = gateway_filter(hcm)["typed_config"]
    if typed["@type"].endswith("DynamicModuleFilter"):
        return typed["filter_config"], "value"
    return typed["config"]["configuration"], "value"


def stat_prefix():
    """Where the gateway's stats live in /stats: the wasm build's flat names, or the module's."""
    return "dynamicmodulescustom.llm_gateway" if NATIVE else "wasmcustom.llm_gateway"


# `llm-gateway render` flags for the runtime under test.
RUNTIME_ARGS = ["--runtime", RUNTIME]

NATIVE_PROMETHEUS_PREFIX = "envoy_dynamicmodulescustom_"
# The native module hands Envoy its counters and gauges every 200 ms (native/stats.rs).
NATIVE_STATS_FLUSH_S = 0.2


def metrics_settled():
    """Wait until what the gateway counted so far is in Envoy's stats: at once for the wasm
    build, after the module's next flush for the native one."""
    if NATIVE:
        time.sleep(NATIVE_STATS_FLUSH_S * 2)


def prometheus_lines(text):
    """Envoy's /stats/prometheus lines with the gateway's series under one name whatever the
    runtime: the module's `envoy_dynamicmodulescustom_llm_gateway_*` read as the wasm build's
    `llm_gateway_*` (examples/observability/prometheus.yml relabels them the same way)."""
    return [line[len(NATIVE_PROMETHEUS_PREFIX):] if line.startswith(NATIVE_PROMETHEUS_PREFIX + "llm_gateway_")
            else line for line in text.splitlines()]


def envoy_env(env=None):
    """Envoy's environment: the module's search path and, for the native build, the variables
    a test gives the gateway (the wasm build gets them as its VM's environment)."""
    out = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR)}
    if NATIVE and env:
        out.update(env)
    return out


def envoy_bin():
    explicit = os.environ.get("ENVOY_BIN")
    if explicit:
        return explicit
    return subprocess.check_output([str(ROOT / "scripts" / "envoy-path.sh")], text=True).strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc):
    """Terminate a helper process, killing it if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


def _cluster(name, port):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": 16777216,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def envoy_config(gateway_config, upstream_ports, listen_port, admin_port, env=None, stats_flush_ms=None, runtime=None,
                 extra_clusters=()):
    """The shipped envoy.yaml (envoy.native.yaml for the native runtime) with our ports, one
    cluster per upstream port, and this gateway JSON."""
    native = (runtime or RUNTIME) == "native"
    shipped_config = "envoy.native.yaml" if native else "envoy.yaml"
    base = yaml.safe_load((ROOT / "envoy" / shipped_config).read_text())
    cfg = copy.deepcopy(base)
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listen_port
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    if not native:
        wasm = gateway_filter(hcm)["typed_config"]["config"]
        wasm["vm_config"]["code"]["local"]["filename"] = str(WASM)
        if env:
            wasm["vm_config"]["environment_variables"] = {"key_values": env}
    holder, key = gateway_json_holder(hcm)
    # The shipped route sets a timeout and retries, and says so to the filter in the shipped
    # gateway JSON; every test's JSON is told the same (as `render` does), unless it says
    # otherwise itself.
    gateway_config = copy.deepcopy(gateway_config)
    shipped = json.loads(holder[key])["general_settings"]["envoy_route_defaults"]
    gateway_config.setdefault("general_settings", {}).setdefault("envoy_route_defaults", shipped)
    holder[key] = json.dumps(gateway_config)
    if stats_flush_ms:
        cfg["stats_flush_interval"] = f"{stats_flush_ms / 1000}s"
    cfg["static_resources"]["clusters"] = [_cluster(f"127.0.0.1:{p}", p) for p in sorted(set(upstream_ports))]
    cfg["static_resources"]["clusters"] += list(extra_clusters)
    return cfg


class Gateway:
    def __init__(self, gateway_config, upstream_ports, concurrency=2, env=None, stats_flush_ms=None, extra_clusters=()):
        self.extra_clusters = extra_clusters
        # A port found free can be taken by another process before Envoy binds it: start
        # again on fresh ports when that is why Envoy exited.
        for attempt in range(3):
            self._start(gateway_config, upstream_ports, concurrency, env, stats_flush_ms)
            try:
                wait_until(self._ready, 20, "envoy")
                break
            except TimeoutError:
                log = open(self.log_path).read()[-4000:]
                self.stop()
                if "Address already in use" not in log or attempt == 2:
                    raise RuntimeError("envoy did not start:\n" + log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def _start(self, gateway_config, upstream_ports, concurrency, env, stats_flush_ms):
        self.port = free_port()
        self.admin_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="llm-gw-")
        self.config_path = os.path.join(self.dir, "envoy.yaml")
        with open(self.config_path, "w") as f:
            json.dump(envoy_config(gateway_config, upstream_ports, self.port, self.admin_port, env, stats_flush_ms,
                                   extra_clusters=self.extra_clusters), f)
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            # Access-log lines reach the file within 50 ms (Envoy's default is every 10 s).
            [envoy_bin(), "-c", self.config_path, "--concurrency", str(concurrency), "-l", "warning",
             "--base-id", str(self.port), "--disable-hot-restart", "--file-flush-interval-msec", "50"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=envoy_env(env))

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("envoy exited:\n" + open(self.log_path).read()[-4000:])
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
        return r.status_code == 200

    def stats(self, prefix=""):
        text = requests.get(f"{self.admin}/stats", timeout=5).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix):
                out[name] = value
        return out

    def logs(self):
        self.log.flush()
        return open(self.log_path).read()

    def stop(self):
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TritonServer:
    """tests/integration/triton_server.py in a child process, on free ports."""

    MODELS = ("echo", "echo_stream", "embed")

    def __init__(self, python=sys.executable):
        self.port = free_port()
        grpc, metrics = free_port(), free_port()
        self.home = tempfile.mkdtemp(prefix="pytriton-")
        self.log_path = os.path.join(self.home, "triton.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTRITON_HOME=self.home)
        self.proc = subprocess.Popen(
            [python, str(HERE / "triton_server.py"), "--http-port", str(self.port),
             "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_until(self._ready, 180, "triton")
        except TimeoutError:
            self.stop()
            raise RuntimeError("triton did not start:\n" + open(self.log_path).read()[-4000:])

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("triton exited:\n" + open(self.log_path).read()[-4000:])
        return all(requests.get(f"{self.url}/v2/models/{m}/ready", timeout=1).status_code == 200
                   for m in self.MODELS)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)
