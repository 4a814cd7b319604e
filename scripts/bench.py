"""`make bench`: plain Envoy against Envoy with the gateway, same upstream, same requests.

The upstream is a third Envoy answering fixed responses (direct_response: C++, so the
upstream is never the bottleneck): an OpenAI chat completion, a Triton /generate answer, and
a Triton /generate_stream body of 20 events. Each scenario runs A (plain) and B (gateway)
in alternating rounds under wrk (Debian's package): requests/s and p50/p99 at saturation
(16 connections), p50/p99 at a moderate paced rate (4 connections, 10 ms apart: about
400 requests/s), and the proxy Envoy's CPU per request from /proc. Then RSS and startup time
of each Envoy at --concurrency 2, and the 1,000-deployment config. BENCH_LITELLM=1 adds
LiteLLM's proxy on the same upstream. Everything listens on 127.0.0.1; every run is bounded.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from harness import envoy_bin, envoy_config, envoy_env, free_port, wait_until  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "6"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
TMP = Path(tempfile.mkdtemp(prefix="llm-bench-"))
MASTER = "sk-bench"
VIRTUAL_KEY = "sk-bench-virtual"

CHAT_TEXT = "Summarise the following paragraph in one sentence. " * 14
CHAT_ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A short answer of a few words."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 240, "completion_tokens": 8, "total_tokens": 248}})
TRITON_ANSWER = json.dumps({"model_name": "m", "model_version": "1", "text_output": "A short answer of a few words.",
                            "finish_reason": "stop", "num_input_tokens": 240, "num_output_tokens": 8})
STREAM_EVENTS = 20
TRITON_STREAM = "".join(f'data: {{"text_output":"token{i} ","num_output_tokens":1}}\n\n' for i in range(STREAM_EVENTS))


def chat_body(model, stream=False):
    return json.dumps({"model": model, "messages": [{"role": "system", "content": "You are terse."},
                                                    {"role": "user", "content": CHAT_TEXT}],
                       "temperature": 0.2, "max_tokens": 64, "stream": stream})


def triton_body():
    return json.dumps({"text_input": CHAT_TEXT, "max_tokens": 64, "temperature": 0.2})


def upstream_config(port, admin):
    def answer(path, body, ctype):
        return {"match": {"path": path}, "direct_response": {"status": 200, "body": {"inline_string": body}},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": ctype}}]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "upstream", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "upstream",
                "route_config": {"max_direct_response_body_size_bytes": 1048576, "virtual_hosts": [{
                    "name": "u", "domains": ["*"], "routes": [
                        answer("/v1/chat/completions", CHAT_ANSWER, "application/json"),
                        answer("/v2/models/m/generate", TRITON_ANSWER, "application/json"),
                        answer("/v2/models/m/generate_stream", TRITON_STREAM, "text/event-stream"),
                    ]}]},
                # Read each request whole before answering: a direct response sent earlier makes
                # Envoy close the connection, and every request would pay for a new one.
                "http_filters": [
                    {"name": "envoy.filters.http.buffer", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                        "max_request_bytes": 1048576}},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}


def plain_config(port, admin, upstream_port):
    """The same Envoy wiring without the filter: every request to the upstream."""
    cfg = envoy_config({"model_list": []}, [upstream_port], port, admin)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    hcm.pop("access_log", None)
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "route": {"cluster": f"127.0.0.1:{upstream_port}", "timeout": "0s"}}]
    return cfg


def gateway_json(upstream_port, extra_deployments=0):
    base = f"http://127.0.0.1:{upstream_port}"
    models = [
        {"model_name": "chat", "litellm_params": {"model": "hosted_vllm/m", "api_base": f"{base}/v1"}},
        {"model_name": "gen", "litellm_params": {"model": "triton/llama-3", "api_base": f"{base}/v2/models/m/generate"}},
        # Two rows of the provider table on the same stand-in: groq/ takes every OpenAI
        # parameter (nothing to check), mistral/ has a list (the request's members are read).
        {"model_name": "openai", "litellm_params": {"model": "openai/m", "api_base": f"{base}/v1", "api_key": "sk-o"}},
        {"model_name": "groq", "litellm_params": {"model": "groq/m", "api_base": f"{base}/v1", "api_key": "gsk"}},
        {"model_name": "mistral", "litellm_params": {"model": "mistral/m", "api_base": f"{base}/v1", "api_key": "ms"}},
    ]
    for i in range(extra_deployments):
        models.append({"model_name": f"g{i % 250}", "litellm_params": {"model": f"openai/m{i}", "api_base": base}})
    # A virtual key with limits, as production traffic carries: only the instruction count uses
    # it (its rpm limit is far above what the benchmark sends).
    return {"model_list": models, "general_settings": {"master_key": MASTER, "virtual_keys": [
        {"key": VIRTUAL_KEY, "key_alias": "bench", "models": ["chat", "gen"], "rpm_limit": 1000000000,
         "tpm_limit": 1000000000000}]}}


NATIVE_SO = ROOT / "target" / "release" / "libllm_gateway.so"


def gateway_config(port, admin, upstream_port, extra=0, litellm_headers=True, runtime="wasm"):
    gw = gateway_json(upstream_port, extra)
    gw["general_settings"]["litellm_response_headers"] = litellm_headers
    cfg = envoy_config(gw, [upstream_port], port, admin, runtime=runtime)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].pop("access_log", None)
    return cfg


class Envoy:
    def __init__(self, name, config, concurrency):
        self.name = name
        self.admin = config["admin"]["address"]["socket_address"]["port_value"]
        path = TMP / f"{name}-{concurrency}.json"
        path.write_text(json.dumps(config))
        self.log = open(TMP / f"{name}-{concurrency}.log", "w")
        start = time.monotonic()
        self.proc = subprocess.Popen([envoy_bin(), "-c", str(path), "--concurrency", str(concurrency), "-l", os.environ.get("BENCH_LOG_LEVEL", "error"),
                                      "--base-id", str(self.admin), "--disable-hot-restart"],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=envoy_env())
        wait_until(lambda: requests.get(f"http://127.0.0.1:{self.admin}/ready", timeout=1).ok, 30, name)
        self.startup_ms = (time.monotonic() - start) * 1000

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def lua_script(body, paced):
    path = TMP / f"req-{abs(hash((body, paced)))}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {MASTER}"\n'
        + ("function delay() return 10 end\n" if paced else ""))
    return path


def wrk(url, body, connections, paced, cpu_of=None):
    before = cpu_of() if cpu_of else 0.0
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s", str(lua_script(body, paced)), url],
                         capture_output=True, text=True, timeout=SECONDS + 30).stdout
    after = cpu_of() if cpu_of else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} failed requests in the benchmark:\n{out}")

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "cpu_us_per_req": (after - before) * 1e6 / max(total, 1) if cpu_of else None}


def median(values):
    v = sorted(values)
    return v[len(v) // 2]


def run_scenario(name, proxies, plain_path, plain_body, gw_path, gw_body):
    """Alternating rounds over `proxies` ({"plain": Envoy, "gateway": Envoy, ...}): every
    proxy but plain takes the gateway's request."""
    rows = {label: [] for label in proxies}
    for _ in range(ROUNDS):
        for label, envoy in proxies.items():
            path, body = (plain_path, plain_body) if label == "plain" else (gw_path, gw_body)
            url = f"http://127.0.0.1:{envoy.port}{path}"
            sat = wrk(url, body, 16, False, envoy.cpu_seconds)
            mod = wrk(url, body, 4, True)
            rows[label].append({**sat, "mod_p50_ms": mod["p50_ms"], "mod_p99_ms": mod["p99_ms"]})
    summary = {}
    for label, runs in rows.items():
        summary[label] = {k: median([r[k] for r in runs]) for k in runs[0]}
    p = summary["plain"]
    summary["ratios"] = {label: {"rps": summary[label]["rps"] / p["rps"],
                                 "added_cpu_us": summary[label]["cpu_us_per_req"] - p["cpu_us_per_req"]}
                         for label in proxies if label != "plain"}
    return name, summary


FLOOR_WASM = ROOT / "benches" / "floor_filter" / "target" / "wasm32-wasip1" / "release" / "floor_filter.wasm"
COUNTED = int(os.environ.get("BENCH_COUNTED", "200"))


def floor_config(port, admin, upstream_port):
    """Plain Envoy plus the floor filter: a raw-ABI wasm filter that only holds both bodies."""
    cfg = plain_config(port, admin, upstream_port)
    wasm = gateway_config(port, admin, upstream_port)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"][0]
    wasm["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(FLOOR_WASM)
    wasm["typed_config"]["config"]["configuration"]["value"] = "{}"
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, wasm)
    return cfg


NATIVE_FLOOR = ROOT / "benches" / "native_floor" / "target" / "release" / "libnative_floor.so"


def native_floor_config(port, admin, upstream_port):
    """Plain Envoy plus the native floor: a dynamic module (issue 18's native shell's ABI) that
    only holds both bodies — what Envoy charges a native filter before it does any work."""
    cfg = plain_config(port, admin, upstream_port)
    module = {"name": "envoy.filters.http.dynamic_modules", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"module": {"local": {"filename": str(NATIVE_FLOOR)}}},
        "filter_name": "floor",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"}}}
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, module)
    return cfg


def count_instructions(label, config, requests_by_scenario):
    """Instructions per request of one Envoy (all threads) under callgrind: a meter that does
    not move with the machine's load, so a change of a few percent is visible. Envoy starts
    once; each scenario is warmed up, then its counters are zeroed, COUNTED requests sent one
    at a time, and the counters dumped."""
    admin = config["admin"]["address"]["socket_address"]["port_value"]
    port = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    path = TMP / f"cg-{label}.json"
    path.write_text(json.dumps(config))
    out = TMP / f"cg-{label}.out"
    log = open(TMP / f"cg-{label}.log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--smc-check=all",
                             "--vex-iropt-register-updates=allregs-at-mem-access", "--trace-children=yes",
                             envoy_bin(), "-c", str(path), "--concurrency", "1", "-l", "error", "--base-id", str(admin),
                             "--disable-hot-restart"], stdout=log, stderr=subprocess.STDOUT, env=envoy_env())
    counts = {}
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{admin}/ready", timeout=5).ok, 300, f"{label} under callgrind")
        session = requests.Session()
        headers = {"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"}
        for scenario, (url_path, body, *key) in requests_by_scenario.items():
            scenario_headers = {**headers, "Authorization": f"Bearer {key[0]}"} if key else headers

            def send(n):
                for _ in range(n):
                    r = session.post(f"http://127.0.0.1:{port}{url_path}", data=body, headers=scenario_headers,
                                     timeout=60)
                    if r.status_code != 200:
                        raise SystemExit(f"{label} {scenario}: {r.status_code} {r.text[:200]}")
            send(50)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, timeout=60)
            send(COUNTED)
            before = set(TMP.glob(f"cg-{label}.out*"))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, timeout=60)
            wait_until(lambda: set(TMP.glob(f"cg-{label}.out*")) - before, 60, f"{label} callgrind dump")
            dump = max(set(TMP.glob(f"cg-{label}.out*")) - before, key=lambda f: f.stat().st_mtime)
            wait_until(lambda: "totals:" in dump.read_text(errors="replace") or "summary:" in dump.read_text(errors="replace"),
                       60, f"{label} callgrind dump complete")
            total = next(int(line.split()[1]) for line in dump.read_text(errors="replace").splitlines()
                         if line.startswith(("totals:", "summary:")))
            counts[scenario] = total / COUNTED
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return counts


def instruction_rows(up_port):
    """plain, floor and gateway under callgrind, two at a time (each is one busy thread)."""
    plain_paths = {"chat": ("/v1/chat/completions", chat_body("m")), "generate": ("/v2/models/m/generate", triton_body()),
                   "stream": ("/v2/models/m/generate_stream", triton_body())}
    gateway_paths = {"chat": ("/v1/chat/completions", chat_body("chat")), "generate": ("/v1/chat/completions", chat_body("gen")),
                     "stream": ("/v1/chat/completions", chat_body("gen", stream=True)),
                     "chat, virtual key": ("/v1/chat/completions", chat_body("chat"), VIRTUAL_KEY),
                     "chat, openai/": ("/v1/chat/completions", chat_body("openai")),
                     "chat, groq/": ("/v1/chat/completions", chat_body("groq")),
                     "chat, mistral/": ("/v1/chat/completions", chat_body("mistral"))}
    jobs = [("gateway", lambda p, a: gateway_config(p, a, up_port), gateway_paths),
            # The same gateway without LiteLLM's x-litellm-* answer headers (one host call each).
            ("lean", lambda p, a: gateway_config(p, a, up_port, litellm_headers=False),
             {"chat, no x-litellm-*": gateway_paths["chat"]}),
            ("plain", lambda p, a: plain_config(p, a, up_port), plain_paths),
            ("floor", lambda p, a: floor_config(p, a, up_port), plain_paths)]
    if NATIVE_FLOOR.exists():
        jobs.append(("native floor", lambda p, a: native_floor_config(p, a, up_port), plain_paths))
    if NATIVE_SO.exists():
        jobs.append(("native", lambda p, a: gateway_config(p, a, up_port, runtime="native"), gateway_paths))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        futures = {label: pool.submit(count_instructions, label, make(free_port(), free_port()), paths)
                   for label, make, paths in jobs}
        return {label: f.result() for label, f in futures.items()}


def main():
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    up_port, up_admin = free_port(), free_port()
    upstream = Envoy("upstream", upstream_config(up_port, up_admin), 1)
    results = {"date": time.strftime("%Y-%m-%d"), "envoy": subprocess.run([envoy_bin(), "--version"], capture_output=True,
                                                                         text=True).stdout.strip().split("version: ")[-1],
               "rounds": ROUNDS, "seconds": SECONDS, "scenarios": {}}
    try:
        pp, pa, gp, ga = free_port(), free_port(), free_port(), free_port()
        plain = Envoy("plain", plain_config(pp, pa, up_port), 1)
        plain.port = pp
        gateway = Envoy("gateway", gateway_config(gp, ga, up_port), 1)
        gateway.port = gp
        proxies = {"plain": plain, "gateway": gateway}
        if NATIVE_SO.exists():
            npt, nad = free_port(), free_port()
            proxies["native"] = Envoy("native", gateway_config(npt, nad, up_port, runtime="native"), 1)
            proxies["native"].port = npt
        try:
            scenarios = [
                ("openai-compatible chat (1 KB)", "/v1/chat/completions", chat_body("m"), "/v1/chat/completions", chat_body("chat")),
                ("triton generate, both ways", "/v2/models/m/generate", triton_body(), "/v1/chat/completions", chat_body("gen")),
                (f"triton generate_stream ({STREAM_EVENTS} events)", "/v2/models/m/generate_stream", triton_body(),
                 "/v1/chat/completions", chat_body("gen", stream=True)),
            ]
            for name, ppath, pbody, gpath, gbody in scenarios:
                n, s = run_scenario(name, proxies, ppath, pbody, gpath, gbody)
                results["scenarios"][n] = s
                print(f"done: {n}", flush=True)
        finally:
            for envoy in proxies.values():
                envoy.stop()
        # Memory and startup at --concurrency 2.
        mem = {}
        for label, make in (("plain", lambda p, a: plain_config(p, a, up_port)),
                            ("gateway", lambda p, a: gateway_config(p, a, up_port)),
                            ("gateway, 1,000 deployments", lambda p, a: gateway_config(p, a, up_port, 1000)),
                            *((("native floor", lambda p, a: native_floor_config(p, a, up_port)),)
                              if NATIVE_FLOOR.exists() else ()),
                            *((("native", lambda p, a: gateway_config(p, a, up_port, runtime="native")),)
                              if NATIVE_SO.exists() else ())):
            port = free_port()
            e = Envoy(label.split(",")[0].replace(" ", "-") + ("-1000" if "1,000" in label else ""), make(port, free_port()), 2)
            e.port = port
            time.sleep(1)
            mem[label] = {"rss_mb": e.rss_mb(), "startup_ms": e.startup_ms}
            if "1,000" in label:
                body = chat_body("g7")
                mem[label]["rps"] = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, 16, False)["rps"]
            elif label in ("gateway", "native"):
                mem[label]["rps"] = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", chat_body("chat"), 16, False)["rps"]
            e.stop()
        results["memory"] = mem
        if shutil.which("valgrind") and FLOOR_WASM.exists():
            results["instructions"] = instruction_rows(up_port)
        else:
            print("instructions per request: skipped (needs valgrind and the floor filter: make bench builds it)")
        if shutil.which("redis-server"):
            import bench_fleet  # noqa: PLC0415 - it imports this module
            results["fleet"] = bench_fleet.fleet_rows(up_port)
        else:
            print("fleet-wide limits: skipped (needs redis-server: make redis)")
        if os.environ.get("BENCH_LITELLM") == "1":
            try:
                results["litellm"] = litellm_row(up_port)
            except Exception as e:  # noqa: BLE001 - report what was measured, say what failed
                results["litellm_error"] = f"{type(e).__name__}: {e}"
                print(f"LiteLLM row failed: {results['litellm_error']}", flush=True)
    finally:
        upstream.stop()
    report(results)
    out = ROOT / "target" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {out}")
    shutil.rmtree(TMP, ignore_errors=True)


def litellm_row(upstream_port):
    venv = ROOT / ".venv-litellm"
    if not (venv / "bin" / "litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    cfg = TMP / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: chat
    litellm_params: {{model: openai/m, api_base: "http://127.0.0.1:{upstream_port}/v1", api_key: "x"}}
general_settings: {{master_key: {MASTER}}}
""")
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen([str(venv / "bin" / "litellm"), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).ok, 120, "litellm")
        startup = (time.monotonic() - start) * 1000

        def cpu():
            total = 0
            for pid in [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                                     text=True).stdout.split()]:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
            return total / CLK_TCK

        sat = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", chat_body("chat"), 16, False, cpu)
        mod = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", chat_body("chat"), 4, True)
        rss = sum(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:")) / 1024
        return {**sat, "mod_p50_ms": mod["p50_ms"], "mod_p99_ms": mod["p99_ms"], "rss_mb": rss, "startup_ms": startup}
    finally:
        proc.terminate()
        proc.wait(20)


def report(r):
    print(f"\nllm-gateway benchmark — {r['date']}, Envoy {r['envoy']}, {os.cpu_count()} cores, "
          f"{r['rounds']} alternating rounds of {r['seconds']} s (medians)\n")
    print(f"{'scenario':40} {'proxy':8} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'paced p50':>9} {'paced p99':>9} {'CPU µs/req':>10}")
    for name, s in r["scenarios"].items():
        for label in [k for k in s if k != "ratios"]:
            x = s[label]
            print(f"{name:40} {label:8} {x['rps']:9.0f} {x['p50_ms']:7.2f} {x['p99_ms']:7.2f} "
                  f"{x['mod_p50_ms']:9.2f} {x['mod_p99_ms']:9.2f} {x['cpu_us_per_req']:10.1f}")
        for label, ratio in s["ratios"].items():
            extra = f"added CPU {ratio['added_cpu_us']:.1f} µs/request"
            if "stream" in name:
                extra += f" ({ratio['added_cpu_us'] / STREAM_EVENTS:.2f} µs per event)"
            print(f"{'':40} {label[:8]:8} {ratio['rps']:9.2f}x   {extra}")
    print(f"\n{'Envoy at --concurrency 2':40} {'RSS MB':>8} {'ready ms':>9} {'req/s':>9}")
    for label, m in r["memory"].items():
        print(f"{label:40} {m['rss_mb']:8.1f} {m['startup_ms']:9.0f} {m.get('rps', 0):9.0f}")
    if "instructions" in r:
        ins = r["instructions"]
        print(f"\nInstructions per request under callgrind (deterministic; {COUNTED} sequential requests each, "
              f"the whole Envoy process)")
        native = ins.get("native floor", {})
        module = ins.get("native", {})
        print(f"{'scenario':18} {'plain':>9} {'floor':>9} {'gateway':>9} {'floor +':>9} {'gateway +':>10}"
              + (f" {'native floor +':>15}" if native else "") + (f" {'native gw +':>12}" if module else ""))
        rows = [(s, g) for s, g in ins["gateway"].items()] + [(s, g) for s, g in ins.get("lean", {}).items()]
        for scenario, g in rows:
            # The plain and floor Envoys take no key: a keyed scenario compares with their unkeyed one.
            base = scenario.split(",")[0]
            p, f = ins["plain"][base], ins["floor"][base]
            n = f" {native[base] - p:15.0f}" if base in native else ""
            m = f" {module[scenario] - p:12.0f}" if scenario in module else ""
            print(f"{scenario:18} {p:9.0f} {f:9.0f} {g:9.0f} {f - p:9.0f} {g - p:10.0f}{n}{m}")
    if "fleet" in r:
        import bench_fleet  # noqa: PLC0415 - it imports this module
        bench_fleet.report(r["fleet"])
    if "litellm_error" in r:
        print(f"\nLiteLLM: not measured ({r['litellm_error']})")
    if "litellm" in r:
        x = r["litellm"]
        print(f"\nLiteLLM proxy (1 worker): {x['rps']:.0f} req/s, p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
              f"paced p50 {x['mod_p50_ms']:.2f} ms, CPU {x['cpu_us_per_req']:.0f} µs/request, RSS {x['rss_mb']:.0f} MB, "
              f"ready in {x['startup_ms'] / 1000:.1f} s")


if __name__ == "__main__":
    # bench_fleet imports this module by name: the same one, not a second copy with its own TMP.
    sys.modules.setdefault("bench", sys.modules["__main__"])
    main()
