"""What a request pays for fleet-wide limits (`make bench`'s last section; alone:
`python scripts/bench_fleet.py`): the gateway on a deployment with `rpm`, without a rate-limit
service and with one, side by side, per runtime.

The service is the integration tests' double (tests/ratelimit_double.py: grpcio, counting in
a real Redis). It is no production engine: its own time per call (Python, one Redis pipeline)
is in the latency measured here, so the added latency is an upper bound for a faster service
(envoyproxy/ratelimit, Limitador). The Envoy's CPU per request is the gateway's own cost of
the call, whatever answers it. The saturated req/s is the double's, not the gateway's, once it
is the bottleneck."""

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench
from bench import MASTER, NATIVE_SO, TMP, Envoy, chat_body, gateway_json, upstream_config, wrk
from harness import envoy_config, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
# Far above what the benchmark sends: every call answers OK, and is still one INCRBY.
RPM = 1_000_000_000


def fleet_gateway(port, admin, upstream_port, rls_port, runtime, with_service):
    gw = gateway_json(upstream_port)
    chat = next(m for m in gw["model_list"] if m["model_name"] == "chat")
    chat["litellm_params"]["rpm"] = RPM
    chat["model_info"] = {"id": "bench-chat"}
    clusters = []
    if with_service:
        address = f"127.0.0.1:{rls_port}"
        gw["general_settings"]["rate_limit_service"] = {"address": address, "instances": 1, "timeout_ms": 1000}
        clusters = [{"name": address, "type": "STATIC", "connect_timeout": "1s",
                     "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                         "explicit_http_config": {"http2_protocol_options": {}}}},
                     "load_assignment": {"cluster_name": address, "endpoints": [{"lb_endpoints": [{"endpoint": {
                         "address": {"socket_address": {"address": "127.0.0.1", "port_value": rls_port}}}}]}]}}]
    cfg = envoy_config(gw, [upstream_port], port, admin, runtime=runtime, extra_clusters=clusters)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].pop("access_log", None)
    return cfg


def start(args, log, ready):
    out = open(TMP / log, "w")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_until(ready, 20, args[0])
    return proc


def fleet_rows(upstream_port):
    """{runtime: {"off": {...}, "on": {...}}}, medians of bench.ROUNDS alternating rounds."""
    redis_port, rls_port = free_port(), free_port()
    limits = TMP / "fleet-limits.yaml"
    limits.write_text(
        'domain: "llm-gateway"\ndescriptors:\n  - key: "deployment"\n    value: "bench-chat"\n'
        f"    rate_limit:\n      unit: minute\n      requests_per_unit: {RPM}\n")
    redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                  "fleet-redis.log",
                  lambda: b"PONG" in subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True).stdout)
    rls = start([sys.executable, str(ROOT / "tests" / "ratelimit_double.py"), "--port", str(rls_port),
                 "--redis-port", str(redis_port), "--config", str(limits)], "fleet-rls.log",
                lambda: "ready" in (TMP / "fleet-rls.log").read_text())
    runtimes = ["wasm"] + (["native"] if NATIVE_SO.exists() else [])
    proxies = {}
    try:
        for runtime in runtimes:
            for mode in ("off", "on"):
                port = free_port()
                e = Envoy(f"fleet-{runtime}-{mode}",
                          fleet_gateway(port, free_port(), upstream_port, rls_port, runtime, mode == "on"), 1)
                e.port = port
                proxies[(runtime, mode)] = e
        body = chat_body("chat")
        runs = {k: [] for k in proxies}
        for _ in range(bench.ROUNDS):
            for key, e in proxies.items():
                url = f"http://127.0.0.1:{e.port}/v1/chat/completions"
                sat = wrk(url, body, 16, False)
                # CPU at the paced rate, the same for both: at saturation the service-on
                # Envoy runs slower (the double is the bottleneck) and its per-request CPU
                # would mix in the cost of running emptier event loops.
                paced = wrk(url, body, 4, True, e.cpu_seconds)
                runs[key].append({"rps": sat["rps"], "cpu_us_per_req": paced["cpu_us_per_req"],
                                  "p50_ms": paced["p50_ms"], "p99_ms": paced["p99_ms"]})
        out = {}
        for (runtime, mode), rows in runs.items():
            out.setdefault(runtime, {})[mode] = {k: bench.median([r[k] for r in rows]) for k in rows[0]}
        for e in proxies.values():
            e.stop()
        proxies = {}
        if shutil.which("valgrind"):
            count_instructions(out, upstream_port, rls_port)
        return out
    finally:
        for e in proxies.values():
            e.stop()
        for proc in (rls, redis):
            proc.terminate()
            proc.wait(10)


def count_instructions(out, upstream_port, rls_port):
    """Callgrind's instructions per chat request (the whole Envoy), into `out`: the
    deterministic measure of what the call costs the gateway, whatever the machine's load."""
    paths = {"chat": ("/v1/chat/completions", chat_body("chat"))}
    jobs = {(runtime, mode): fleet_gateway(free_port(), free_port(), upstream_port, rls_port, runtime, mode == "on")
            for runtime in out for mode in ("off", "on")}
    with ThreadPoolExecutor(2) as pool:
        futures = {key: pool.submit(bench.count_instructions, f"fleet-{key[0]}-{key[1]}", cfg, paths)
                   for key, cfg in jobs.items()}
        for (runtime, mode), f in futures.items():
            out[runtime][mode]["instructions"] = f.result()["chat"]


def report(rows):
    print("\nFleet-wide limits: a deployment with rpm, without and with a rate-limit service (the Python"
          " test double on Redis: its own time is in the latency)")
    print(f"{'runtime':8} {'service':8} {'req/s':>9} {'paced CPU µs/req':>17} {'paced p50':>10} {'paced p99':>10}")
    for runtime, modes in rows.items():
        for mode, x in modes.items():
            print(f"{runtime:8} {mode:8} {x['rps']:9.0f} {x['cpu_us_per_req']:17.1f} {x['p50_ms']:10.2f} {x['p99_ms']:10.2f}")
        on, off = modes["on"], modes["off"]
        print(f"{runtime:8} {'added':8} {'':9} {on['cpu_us_per_req'] - off['cpu_us_per_req']:17.1f} "
              f"{on['p50_ms'] - off['p50_ms']:10.2f} {on['p99_ms'] - off['p99_ms']:10.2f}")
        if "instructions" in on:
            print(f"{runtime:8} instructions per request under callgrind: off {off['instructions']:.0f}, "
                  f"on {on['instructions']:.0f}, added {on['instructions'] - off['instructions']:.0f}")


def main():
    up_port = free_port()
    upstream = Envoy("upstream", upstream_config(up_port, free_port()), 1)
    try:
        rows = fleet_rows(up_port)
    finally:
        upstream.stop()
    report(rows)
    out = ROOT / "target" / "bench-fleet.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
