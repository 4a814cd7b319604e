"""Limits that hold across many Envoys: three gateways (each --concurrency 2) share one
rate-limit service. The service is a test double (tests/ratelimit_double.py) that speaks the real
RLS v3 protocol and counts in a real Redis (Debian's redis-server) as envoyproxy/ratelimit does;
its limits are the file `llm-gateway render --ratelimit-config` writes, and the gateways' cluster
for it is the one `render` writes."""

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import mock_openai
from harness import ROOT, Gateway, free_port, metrics_settled, prometheus_lines, stop_process, wait_until

CLI = ROOT / "target" / "release" / "llm-gateway"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MASTER = "sk-fleet-master"
FLEET_KEY = "sk-fleet-key"
TOKENS_KEY = "sk-fleet-tokens"
FAN_KEY = "sk-fleet-fan"
BUDGET_KEY = "sk-fleet-budget"


def deployment(group, ident, port, rpm):
    return {"model_name": group, "model_info": {"id": ident},
            "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{port}", "rpm": rpm}}


class Process:
    """A helper process on a loopback port, its output in a file."""

    def __init__(self, args, log_path, ready):
        self.args, self.log_path, self.ready = args, log_path, ready
        self.start()

    def start(self):
        # A fresh log each start: readiness is read from it.
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until(self.ready, 20, self.args[0])

    def stop(self):
        stop_process(self.proc)
        self.log.close()

    def output(self):
        self.log.flush()
        return open(self.log_path).read()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.fail("needs redis-server (Debian: apt-get install redis-server; `make integration` installs it)")
    tmp = tmp_path_factory.mktemp("fleet")
    mocks = [mock_openai.start(name=n) for n in ("fleet-a", "fleet-b", "outage-c", "outage-d", "after-e",
                                                  "keyed-g", "pass-h", "tokens-i", "tick-j", "keytok-k",
                                                  "failover-l", "budget-m")]
    ports = [server.server_port for server, _ in mocks]
    redis_port, rls_port = free_port(), free_port()
    config = {
        "model_list": [
            deployment("fleet", "fleet-a", ports[0], 30),
            deployment("fleet", "fleet-b", ports[1], 30),
            deployment("outage", "outage-c", ports[2], 30),
            deployment("outage", "outage-d", ports[3], 30),
            deployment("after", "after-e", ports[4], 6),
            # Room to spare: requests that reach the service while the others are full.
            deployment("probe", "probe-f", ports[4], 100000),
            # No rpm: only the caller's key limits these.
            {"model_name": "keyed", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{ports[5]}"}},
            # tpm only: each answer is 11 tokens (the mock's 5 + 6).
            {"model_name": "tokens", "model_info": {"id": "tokens-i"},
             "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{ports[7]}", "tpm": 100}},
            {"model_name": "tick", "model_info": {"id": "tick-j"},
             "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{ports[8]}", "tpm": 100000}},
            {"model_name": "keytok", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{ports[9]}"}},
            # The first always fails (the mock's "fail-500"): its request fails over to the second.
            {"model_name": "fo", "model_info": {"id": "fo-bad"}, "litellm_params": {
                "model": "openai/fail-500", "api_base": f"http://127.0.0.1:{ports[10]}", "rpm": 1000, "order": 1}},
            {"model_name": "fo", "model_info": {"id": "fo-good"}, "litellm_params": {
                "model": "openai/m", "api_base": f"http://127.0.0.1:{ports[10]}", "rpm": 1000, "order": 2}},
            # Priced: each answer (the mock's 5 + 6 tokens) costs 0.0011 USD.
            {"model_name": "priced", "litellm_params": {
                "model": "openai/m", "api_base": f"http://127.0.0.1:{ports[11]}",
                "input_cost_per_token": 0.0001, "output_cost_per_token": 0.0001}},
            # For /vllm pass-through (a vLLM deployment), no rpm either.
            {"model_name": "pass", "litellm_params": {"model": "hosted_vllm/m", "api_base": f"http://127.0.0.1:{ports[6]}"}},
        ],
        "general_settings": {
            "master_key": MASTER,
            "virtual_keys": [{"key": FLEET_KEY, "key_alias": "fleet-key", "rpm_limit": 10},
                             {"key": TOKENS_KEY, "key_alias": "fleet-tokens", "tpm_limit": 100},
                             {"key": FAN_KEY, "key_alias": "fleet-fan", "rpm_limit": 4},
                             {"key": BUDGET_KEY, "key_alias": "fleet-budget", "max_budget": 0.011}],
            "rate_limit_service": {
            # A generous timeout: on two busy cores a call can take longer than the 20 ms
            # default, and this test is about exact counts, not the slow-service path.
            "address": f"127.0.0.1:{rls_port}", "instances": 3, "timeout_ms": 1000}},
    }
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(config))
    limits, limitador, rendered = tmp / "ratelimit.yaml", tmp / "limitador.yaml", tmp / "envoy.json"
    subprocess.run([CLI, "render", config_path, "-o", rendered, "--ratelimit-config", limits,
                    "--limitador-limits", limitador], check=True, capture_output=True)
    clusters = json.loads(rendered.read_text().split("\n", 1)[1])["static_resources"]["clusters"]
    rls_cluster = next(c for c in clusters if c["name"] == f"127.0.0.1:{rls_port}")

    redis = Process(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no"], tmp / "redis.log",
                    lambda: b"PONG" in subprocess.run(["redis-cli", "-p", str(redis_port), "ping"],
                                                      capture_output=True).stdout)
    rls = Process([sys.executable, str(ROOT / "tests" / "ratelimit_double.py"), "--port", str(rls_port),
                   "--redis-port", str(redis_port), "--config", str(limits)], tmp / "rls.log",
                  lambda: "ready" in open(tmp / "rls.log").read())
    gateways = []
    try:
        for _ in range(3):
            gateways.append(Gateway(config, ports, concurrency=2, extra_clusters=[rls_cluster]))
        yield {"gateways": gateways, "mocks": mocks, "rls": rls, "redis": redis, "redis_port": redis_port,
               "limits": limits,
               "limitador": limitador, "rls_cluster": rls_cluster}
    finally:
        for gw in gateways:
            gw.stop()
        rls.stop()
        redis.stop()
        for server, _ in mocks:
            server.shutdown()


def post(gw, model, key=MASTER):
    return requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model},
                         headers={"connection": "close", "authorization": f"Bearer {key}"}, timeout=30)


def spread(gateways, model, n, threads=6, key=MASTER):
    """n requests over the gateways in turn, `threads` at a time: the answers."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: post(gateways[i % len(gateways)], model, key), range(n)))


def fresh_minute(needed_s):
    """Wait, if need be, so that `needed_s` seconds of this clock minute remain: the service's
    windows and the gateways' are clock-aligned minutes."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


def test_rendered_service_config_lists_every_limit(fleet):
    text = fleet["limits"].read_text()
    for ident, rpm in [("fleet-a", 30), ("fleet-b", 30), ("outage-c", 30), ("after-e", 6), ("probe-f", 100000)]:
        assert f'value: "{ident}"\n    rate_limit:\n      unit: minute\n      requests_per_unit: {rpm}\n' in text
    assert "condition" not in text
    # The configured key with rpm_limit, by its id: never the key itself.
    assert '- key: "key"\n    value: "static-' in text and "requests_per_unit: 10\n" in text
    assert FLEET_KEY not in text
    # tpm: its own descriptor, in tokens.
    assert '- key: "deployment_tpm"\n    value: "tokens-i"\n    rate_limit:\n      unit: minute\n      requests_per_unit: 100\n' in text
    # A budget: one counter per budget period, in 0.0001 USD, per year.
    assert ('- key: "key_budget"\n    value: "static-' in text
            and 'descriptors:\n      - key: "budget_period"\n        rate_limit:\n          unit: year\n'
                '          requests_per_unit: 110\n' in text)
    assert "descriptors[0]['deployment'] == 'fleet-a'" in fleet["limitador"].read_text()
    # The service's cluster speaks HTTP/2 (gRPC).
    options = fleet["rls_cluster"]["typed_extension_protocol_options"]
    assert "http2_protocol_options" in json.dumps(options)


def test_each_deployment_gets_exactly_its_rpm_across_three_envoys(fleet):
    gateways, mocks = fleet["gateways"], fleet["mocks"]
    for _, recorder in mocks:
        recorder.take()
    fresh_minute(30)
    answers = spread(gateways, "fleet", 120)
    statuses = [r.status_code for r in answers]
    assert len(mocks[0][1].take()) == 30
    assert len(mocks[1][1].take()) == 30
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 60, statuses
    refused = [r for r in answers if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["type"] for r in refused)
    # Every descriptor the gateways sent had its limit in the rendered file.
    assert "unknown descriptor" not in fleet["rls"].output()


def test_a_keys_rpm_limit_holds_across_three_envoys(fleet):
    gateways, mocks = fleet["gateways"], fleet["mocks"]
    mocks[5][1].take()
    fresh_minute(25)
    # The configured key, rpm_limit 10: exactly 10 of 30 get through the fleet.
    answers = spread(gateways, "keyed", 30, key=FLEET_KEY)
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20, statuses
    assert len(mocks[5][1].take()) == 10
    refused = [r for r in answers if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    # A key minted on one gateway after the service's limits were written: its descriptor
    # carries its own limit, and all three gateways hold it to 5.
    minted = requests.post(f"{gateways[0].url}/key/generate", json={"rpm_limit": 5, "models": ["keyed"]},
                           headers={"authorization": f"Bearer {MASTER}"}, timeout=10)
    assert minted.status_code == 200, minted.text
    statuses = [r.status_code for r in spread(gateways, "keyed", 15, key=minted.json()["key"])]
    assert statuses.count(200) == 5, statuses
    assert len(mocks[5][1].take()) == 5
    # A body-less pass-through (GET /vllm/metrics) is admitted on its key as well.
    minted = requests.post(f"{gateways[1].url}/key/generate", json={"rpm_limit": 4, "models": ["pass"]},
                           headers={"authorization": f"Bearer {MASTER}"}, timeout=10).json()["key"]
    mocks[6][1].take()

    def get(i):
        return requests.get(f"{gateways[i % 3].url}/vllm/metrics", timeout=30,
                            headers={"connection": "close", "authorization": f"Bearer {minted}"})

    with ThreadPoolExecutor(6) as pool:
        statuses = [r.status_code for r in pool.map(get, range(12))]
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == 8, statuses
    assert len(mocks[6][1].take()) == 4
    assert "unknown descriptor" not in fleet["rls"].output()


def test_a_deployments_tpm_holds_across_three_envoys_within_one_answer(fleet):
    gateways, mocks = fleet["gateways"], fleet["mocks"]
    mocks[7][1].take()
    fresh_minute(25)
    statuses = [r.status_code for r in spread(gateways, "tokens", 30, threads=3)]
    served = statuses.count(200)
    assert statuses.count(429) == 30 - served, statuses
    assert len(mocks[7][1].take()) == served
    # tpm 100, 11 tokens an answer: the fleet serves 100 tokens, give or take one answer
    # (each Envoy alone would allow 100).
    assert 100 - 11 <= served * 11 <= 100 + 11, (served, statuses)
    # One answer alone: its prompt estimate is charged at admission, and the tick reports the
    # rest of its 11 tokens (no later admission carries it).
    assert post(gateways[0], "tick").status_code == 200
    time.sleep(2.5)
    window = int(time.time() // 60) * 60
    counted = subprocess.run(["redis-cli", "-p", str(fleet["redis_port"]), "GET",
                              f"llm-gateway_deployment_tpm_tick-j_{window}"],
                             capture_output=True, text=True).stdout.strip()
    assert counted == "11", counted


def test_a_keys_tpm_limit_holds_across_three_envoys_within_one_answer(fleet):
    gateways, mocks = fleet["gateways"], fleet["mocks"]
    mocks[9][1].take()
    fresh_minute(25)
    statuses = [r.status_code for r in spread(gateways, "keytok", 30, threads=3, key=TOKENS_KEY)]
    served = statuses.count(200)
    assert statuses.count(429) == 30 - served, statuses
    assert len(mocks[9][1].take()) == served
    # tpm_limit 100, 11 tokens an answer (each Envoy alone would allow 100).
    assert 100 - 11 <= served * 11 <= 100 + 11, (served, statuses)


def test_a_keys_max_budget_holds_across_three_envoys(fleet):
    gateways, mocks, redis_port = fleet["gateways"], fleet["mocks"], fleet["redis_port"]
    mocks[11][1].take()
    # max_budget 0.011, 0.0011 an answer: ten answers fleet-wide (each Envoy alone, counting
    # its own spend, would serve ten). An answer's cost reaches the service with its Envoy's
    # next admission for the key, or the tick: answers not yet reported (at most the one in
    # flight on each of the three Envoys) may go over.
    statuses = [r.status_code for r in spread(gateways, "priced", 30, threads=3, key=BUDGET_KEY)]
    served = statuses.count(200)
    assert statuses.count(400) == 30 - served, statuses
    assert len(mocks[11][1].take()) == served
    assert 10 <= served <= 10 + 3, (served, statuses)
    # Refused by the budget, as LiteLLM refuses (400 budget_exceeded).
    refused = post(gateways[1], "priced", BUDGET_KEY)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "budget_exceeded", refused.text
    # Every served answer's cost reaches the service (the tick sends what no admission took):
    # 11 units each, plus the estimate of each request the service itself refused (it counts
    # before it compares, as envoyproxy/ratelimit does).
    time.sleep(2.5)
    redis = ["redis-cli", "-p", str(redis_port)]
    names = subprocess.run(redis + ["KEYS", "llm-gateway_key_budget_*"], capture_output=True,
                           text=True).stdout.split()
    assert len(names) == 1 and "_budget_period_0_" in names[0], names
    counted = int(subprocess.run(redis + ["GET", names[0]], capture_output=True, text=True).stdout)
    assert 11 * served < counted <= 11 * served + 30 * (30 - served), (counted, served)


def test_a_fan_out_spends_its_keys_rpm_limit_once_per_arm_across_three_envoys(fleet):
    gateways, mocks = fleet["gateways"], fleet["mocks"]
    mocks[5][1].take(), mocks[9][1].take()
    fresh_minute(20)
    # Two arms each: rpm_limit 4 admits exactly two fan-outs, whole, fleet-wide.
    answers = spread(gateways, "keyed,keytok", 6, threads=3, key=FAN_KEY)
    # Refused by the fleet: 429; refused by an Envoy that the fleet has already told the key
    # is full: LiteLLM's fan-out list of per-model errors.
    served = [r for r in answers if r.status_code == 200 and any("choices" in a for a in r.json())]
    refused = [r for r in answers if r not in served]
    assert len(served) == 2, [(r.status_code, r.text[:200]) for r in answers]
    assert all(r.status_code == 429 or all(a["error"]["code"] == "rate_limit_exceeded" for a in r.json())
               for r in refused), [r.text[:200] for r in refused]
    assert (len(mocks[5][1].take()), len(mocks[9][1].take())) == (2, 2)


def test_a_failover_attempt_is_counted_in_the_fleet_after_the_fact(fleet):
    gw, redis_port = fleet["gateways"][0], fleet["redis_port"]
    fresh_minute(10)
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "fo", "num_retries": 1},
                      headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-deployment"] == "fo-good"
    # fo-bad was admitted by the service; the failover attempt to fo-good was not asked, and
    # the tick counts it there after the fact.
    time.sleep(2)
    window = int(time.time() // 60) * 60

    def counted(ident):
        return subprocess.run(["redis-cli", "-p", str(redis_port), "GET", f"llm-gateway_deployment_{ident}_{window}"],
                              capture_output=True, text=True).stdout.strip()

    assert (counted("fo-bad"), counted("fo-good")) == ("1", "1")


def test_service_down_falls_back_to_a_share_each_and_counts_exactly_once_back(fleet):
    gateways, mocks, rls = fleet["gateways"], fleet["mocks"], fleet["rls"]
    for _, recorder in mocks:
        recorder.take()
    fresh_minute(25)
    # Up: 30 requests, 10 per gateway, all admitted by the service (60 fit).
    assert [r.status_code for r in spread(gateways, "outage", 30)] == [200] * 30
    rls.stop()
    # Down, `local`: each gateway holds each deployment to 30 / 3 = 10 this minute, its own
    # earlier requests included; nothing answers 5xx.
    statuses = [r.status_code for r in spread(gateways, "outage", 60)]
    assert not [s for s in statuses if s >= 500], statuses
    c, d = len(mocks[2][1].take()), len(mocks[3][1].take())
    assert c <= 30 and d <= 30, (c, d)
    assert c + d == 30 + statuses.count(200)
    metrics_settled()
    for gw in gateways:
        logs = gw.logs()
        # Logged once per transition (per Envoy), never per request.
        assert logs.count("does not answer") == 1, logs[-3000:]
        failures = [line for line in prometheus_lines(requests.get(f"{gw.admin}/stats/prometheus", timeout=5).text)
                    if line.startswith("llm_gateway_rate_limit_service_failures{")]
        assert sum(float(line.rpartition(" ")[2]) for line in failures) >= 1, failures
        assert all('reason="' in line for line in failures), failures
    # Back: within a second or so each gateway asks again and counts exactly once more.
    rls.start()
    time.sleep(1.5)

    def back():
        for gw in gateways:
            post(gw, "probe")
        return all("answers again" in gw.logs() for gw in gateways)

    wait_until(back, 15, "every gateway seeing the service again")
    mocks[4][1].take()
    fresh_minute(10)
    statuses = [r.status_code for r in spread(gateways, "after", 12, threads=3)]
    assert statuses.count(200) == 6, statuses
    assert len(mocks[4][1].take()) == 6


def test_a_service_slower_than_its_timeout_counts_as_no_answer(fleet):
    gateways, rls = fleet["gateways"], fleet["rls"]
    plain_args = list(rls.args)
    before = [gw.logs().count("does not answer") for gw in gateways]
    rls.stop()
    rls.args = plain_args + ["--delay-ms", "1500"]  # over the gateways' 1000 ms timeout
    rls.start()
    try:
        # `local` mode: held no longer than the timeout, then admitted within each Envoy's share.
        statuses = [post(gw, "probe").status_code for gw in gateways for _ in range(3)]
        assert statuses == [200] * 9, statuses
        for gw, n in zip(gateways, before):
            assert gw.logs().count("does not answer") == n + 1
    finally:
        rls.stop()
        rls.args = plain_args
        rls.start()
