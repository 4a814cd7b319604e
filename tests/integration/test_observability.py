"""The shipped observability files against the real parts: `promtool` checks the Prometheus
config and the alert rules, and a real Prometheus scrapes a gateway that serves known traffic
(successes, upstream failures and a failover, a cooldown, a deployment at its rpm, key
refusals, a key over its budget, a cache hit, a stream). Every dashboard panel's query and
every alert's expression is then evaluated through Prometheus's HTTP API: each must return
the series that traffic implies (a panel that shows nothing is a bug)."""

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness import free_port, prometheus_lines, wait_until

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "examples" / "observability"
MASTER = "sk-obs"
MSGS = [{"role": "user", "content": "hi"}]


def need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} not found: `make test` installs Debian's prometheus package")
    return path


def test_promtool_accepts_the_shipped_config_and_rules():
    promtool = need("promtool")
    for args in (["check", "config", str(OBS / "prometheus.yml")], ["check", "rules", str(OBS / "alerts.yml")]):
        r = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def dashboard():
    return json.loads((OBS / "grafana-dashboard.json").read_text())


def test_the_dashboard_is_importable_as_is():
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert d["panels"], "a dashboard without panels"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def gateway_config(port):
    base = f"http://127.0.0.1:{port}"
    priced = {"input_cost_per_token": 0.01, "output_cost_per_token": 0.01}
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": "openai/served", "api_base": base},
             "model_info": {"id": "chat-ok", **priced}},
            {"model_name": "chat", "litellm_params": {"model": "openai/fail-500", "api_base": base},
             "model_info": {"id": "chat-bad"}},
            {"model_name": "down", "litellm_params": {"model": "openai/fail-500", "api_base": base},
             "model_info": {"id": "down-1"}},
            {"model_name": "limited", "litellm_params": {"model": "openai/served", "api_base": base, "rpm": 2},
             "model_info": {"id": "limited-1"}},
            # Refuses every request (a client error: no cooldown), so its errors keep coming.
            {"model_name": "strict", "litellm_params": {"model": "openai/fail-400", "api_base": base},
             "model_info": {"id": "strict-1"}},
            # Answers after 3 s: a request held in flight while the panels are read.
            {"model_name": "slow", "litellm_params": {"model": "openai/slow", "api_base": base},
             "model_info": {"id": "slow-1"}},
        ],
        "router_settings": {"num_retries": 1, "allowed_fails": 1, "cooldown_time": 300,
                            "fallbacks": [{"down": ["chat"]}]},
        "litellm_settings": {"cache": True},
        "general_settings": {"master_key": MASTER},
    }


def start_prometheus(admin_port, work):
    prometheus = need("prometheus")
    cfg = yaml.safe_load((OBS / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(OBS / "alerts.yml")]
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{admin_port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(work / "prometheus.log", "w")
    proc = subprocess.Popen([prometheus, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).ok, 30, "prometheus")
    return proc, url


def query(url, expr):
    r = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, (expr, r.text)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def test_every_panel_and_alert_shows_the_traffic_sent(gateway_factory, mock_a):
    # Envoy publishes histograms at each stats flush (default 5 s).
    gw = gateway_factory(gateway_config(mock_a[0]), [mock_a[0]], stats_flush_ms=500)
    work = Path(tempfile.mkdtemp(prefix="llm-gw-prom-"))
    proc, prom = start_prometheus(gw.admin_port, work)
    try:
        master = {"Authorization": f"Bearer {MASTER}"}
        team = requests.post(f"{gw.url}/key/generate", headers=master,
                             json={"key_alias": "team", "max_budget": 0.3}).json()["key"]
        tight = requests.post(f"{gw.url}/key/generate", headers=master,
                              json={"key_alias": "tight", "rpm_limit": 1}).json()["key"]

        def chat(key, model="chat", n=1, **extra):
            for i in range(n):
                requests.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": model, "messages": [{"role": "user", "content": f"q{time.time()}-{i}"}],
                                    **extra}, timeout=20)

        def traffic():
            chat(team, n=2)                      # priced: spend, and the budget nearly used
            chat(MASTER, n=4)                    # some reach chat-bad: upstream errors, failovers
            chat(MASTER, "down", n=2)            # the only deployment fails: a cooldown
            chat(MASTER, "strict", n=2)          # upstream errors on every request
            chat(tight, n=2)                     # the second is refused by the key's rpm
            cached = {"model": "chat", "messages": [{"role": "user", "content": "same question"}]}
            for _ in range(2):                   # the second is a cache hit
                requests.post(f"{gw.url}/v1/chat/completions", headers=master, json=cached, timeout=20)
            r = requests.post(f"{gw.url}/v1/chat/completions", headers=master, timeout=20,
                              json={"model": "chat", "messages": MSGS, "stream": True, "caching": False})
            assert r.status_code == 200

        def envoy_total():
            text = requests.get(f"{gw.admin}/stats/prometheus", timeout=5).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in prometheus_lines(text)
                       if line.startswith(("llm_gateway_requests{", "llm_gateway_errors{")))

        def scraped_up_to_now():
            # Prometheus has scraped what Envoy counts now (its first scrape waits for its
            # target discovery, up to 5 s after start).
            want = envoy_total()
            got = query(prom, "sum(llm_gateway_requests) + sum(llm_gateway_errors)")
            return bool(got) and float(got[0]["value"][1]) == want

        wait_until(lambda: query(prom, 'up{job="llm-gateway"} == 1'), 30, "prometheus scraping the gateway")
        # Counters appear at their first increment; a rate needs them to grow after a scrape.
        traffic()
        chat(MASTER, "limited", n=1)
        wait_until(scraped_up_to_now, 30, "the first traffic scraped")
        # The rpm limit is used up within one clock minute (the deployments' windows): two
        # requests now, with time left in the minute for the scrape and a rule evaluation.
        left = 60 - time.time() % 60
        if left < 15:
            time.sleep(left + 0.2)
        traffic()
        chat(MASTER, "limited", n=2)
        wait_until(scraped_up_to_now, 30, "the second traffic scraped")
        time.sleep(2)                            # the tick-driven gauges, and a rule evaluation

        # Every request so far has ended: none is in flight (a failover that answered once
        # left its request counted here for good).
        assert all(float(s["value"][1]) == 0 for s in query(prom, "llm_gateway_in_flight"))
        # One is held in flight while the panels are read: the in-flight panel shows it.
        slow = threading.Thread(target=chat, args=(MASTER, "slow"))
        slow.start()
        wait_until(lambda: query(prom, 'llm_gateway_in_flight{model_group="slow"} == 1'), 10,
                   "the slow request seen in flight")

        # A panel must show the traffic: some series, and not all of them zero (a rate over
        # series that never grew is zero, which is not data).
        empty = []
        # The in-flight panel first, while the slow request (3 s) is still out.
        targets = [(p, t) for p in dashboard()["panels"] for t in p["targets"]]
        for p, t in sorted(targets, key=lambda pt: "in_flight" not in pt[1]["expr"]):
            series = query(prom, t["expr"])
            if not any(float(s["value"][1]) > 0 for s in series):
                empty.append(f'{p["title"]}: {t["expr"]} -> {series}')
        slow.join()
        assert not empty, "panels with no data:\n" + "\n".join(empty)

        def values(expr):
            return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in query(prom, expr)}
        cooling = query(prom, 'llm_gateway_cooling{deployment="down-1"}')
        assert [(s["metric"]["model_group"], s["value"][1]) for s in cooling] == [("down", "1")]
        assert [s["value"][1] for s in query(prom, 'llm_gateway_cooling{deployment="chat-ok"}')] == ["0"]
        assert sum(values("llm_gateway_failovers").values()) >= 1
        assert sum(values('llm_gateway_fallbacks{model_group="down"}').values()) >= 1
        refused = values('llm_gateway_keys_refusals{key_alias="tight"}')
        assert [dict(k)["reason"] for k in refused] == ["rate_limit"] and sum(refused.values()) >= 2
        assert max(values('llm_gateway_keys_budget_used_permille{key_alias="team"}').values()) >= 900
        assert sum(values('llm_gateway_errors{origin="upstream"}').values()) >= 1
        assert sum(values("llm_gateway_cache_hits").values()) >= 2

        rules = requests.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert len(rules) == 4
        silent = [r["name"] for r in rules if not query(prom, r["query"])]
        assert not silent, f"alerts whose expression the traffic should trip but does not: {silent}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        mock_a[1].take()
