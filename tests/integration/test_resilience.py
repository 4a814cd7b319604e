"""Selection and resilience on the real Envoy at --concurrency 2: rpm limits shared by both
workers, 429s, cooldowns, failover to a sibling, fallback groups, context-window fallbacks."""

import json
import time

import requests

from harness import NATIVE, free_port, wait_until

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def deployment(name, port, model="m", **params):
    return {"model_name": name, "litellm_params": {"model": f"openai/{model}", "api_base": f"http://127.0.0.1:{port}",
                                                    **params}}


def post(gw, model, **extra):
    # A new connection per request, so Envoy spreads requests over both workers.
    return requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model, **extra},
                         headers={"connection": "close"})


def test_rpm_limit_holds_across_workers_and_spills_to_sibling(gateway_factory, mock_a, mock_b):
    cfg = {"model_list": [deployment("g", mock_a[0], rpm=5, weight=100), deployment("g", mock_b[0], weight=1)]}
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0]])
    mock_a[1].take(), mock_b[1].take()
    statuses = [post(gw, "g").status_code for _ in range(30)]
    assert statuses == [200] * 30
    # Without the limit, weight 100:1 would send nearly all 30 to a.
    assert len(mock_a[1].take()) == 5
    assert len(mock_b[1].take()) == 25


def test_group_at_its_limit_is_429_with_retry_after(gateway_factory, mock_a):
    cfg = {"model_list": [deployment("g", mock_a[0], rpm=3)]}
    gw = gateway_factory(cfg, [mock_a[0]])
    ok = [post(gw, "g").status_code for _ in range(3)]
    r = post(gw, "g")
    mock_a[1].take()
    assert ok == [200, 200, 200]
    assert r.status_code == 429, r.text
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_failing_deployment_is_cooled_down_then_comes_back(gateway_factory, mock_a, mock_b):
    cfg = {"model_list": [deployment("g", mock_a[0], model="fail-500"), deployment("g", mock_b[0])],
           "router_settings": {"allowed_fails": 1, "cooldown_time": 2, "num_retries": 1}}
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0]])
    mock_a[1].take(), mock_b[1].take()
    first = [post(gw, "g") for _ in range(20)]
    # Every client request succeeds: a failed attempt moves to the sibling.
    assert [r.status_code for r in first] == [200] * 20, [r.text for r in first if r.status_code != 200]
    assert {r.headers["x-llm-deployment"] for r in first} == {"g/1"}
    # allowed_fails 1: the second failure in a minute cools `a` down; it sees no more traffic.
    assert len(mock_a[1].take()) == 2
    time.sleep(2.5)
    second = [post(gw, "g") for _ in range(20)]
    assert all(r.status_code == 200 for r in second)
    assert len(mock_a[1].take()) >= 1, "after cooldown_time the deployment is tried again"
    mock_b[1].take()


def test_connection_refused_is_retried_on_the_sibling(gateway_factory, mock_b):
    dead = free_port()
    cfg = {"model_list": [deployment("g", dead), deployment("g", mock_b[0])]}
    gw = gateway_factory(cfg, [dead, mock_b[0]])
    rs = [post(gw, "g") for _ in range(20)]
    mock_b[1].take()
    assert [r.status_code for r in rs] == [200] * 20, [r.text for r in rs if r.status_code != 200]
    assert {r.headers["x-llm-deployment"] for r in rs} == {"g/1"}


def test_fallback_group_answers_when_primary_is_down(gateway_factory, mock_b):
    dead = free_port()
    cfg = {"model_list": [deployment("primary", dead), deployment("backup", mock_b[0], model="backup-model")],
           "router_settings": {"fallbacks": [{"primary": ["backup"]}]}}
    gw = gateway_factory(cfg, [dead, mock_b[0]])
    r = post(gw, "primary")
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-model-group"] == "backup"
    (seen,) = mock_b[1].take()
    assert b'"backup-model"' in seen["body"]
    # The answer came from the failover call: the access log names the deployment that gave it.
    time.sleep(0.2)
    records = [json.loads(line.split(" llm=", 1)[1]) for line in gw.logs().splitlines() if " llm={" in line]
    assert records and records[-1]["model_group"] == "backup", records
    assert records[-1]["deployment"] == r.headers["x-llm-deployment"], records
    # Per request, LiteLLM style; the knob itself never reaches the upstream.
    cfg = {"model_list": [deployment("primary", dead), deployment("other", mock_b[0])]}
    gw = gateway_factory(cfg, [dead, mock_b[0]])
    r = post(gw, "primary", fallbacks=["other"], num_retries=0)
    assert r.status_code == 200, r.text
    (seen,) = mock_b[1].take()
    assert b"fallbacks" not in seen["body"] and b"num_retries" not in seen["body"]


def test_all_down_is_an_openai_error(gateway_factory):
    dead1, dead2 = free_port(), free_port()
    cfg = {"model_list": [deployment("g", dead1), deployment("g", dead2)]}
    gw = gateway_factory(cfg, [dead1, dead2])
    r = post(gw, "g")
    assert r.status_code == 503, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_context_window_fallback(gateway_factory, mock_a, mock_b):
    cfg = {"model_list": [
        {**deployment("short", mock_a[0]), "model_info": {"max_input_tokens": 50}},
        deployment("long", mock_b[0])],
        "router_settings": {"context_window_fallbacks": [{"short": ["long"]}]}}
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0]])
    mock_a[1].take(), mock_b[1].take()
    assert post(gw, "short").headers["x-llm-model-group"] == "short"
    long_prompt = {"messages": [{"role": "user", "content": "word " * 400}]}
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**long_prompt, "model": "short"})
    assert r.status_code == 200 and r.headers["x-llm-model-group"] == "long"
    mock_a[1].take(), mock_b[1].take()


def test_health_probes_report_a_stopped_deployment(gateway_factory, mock_a):
    dead = free_port()
    cfg = {"model_list": [
        {"model_name": "up", "litellm_params": {"model": "hosted_vllm/m", "api_base": f"http://127.0.0.1:{mock_a[0]}/v1"}},
        deployment("down", dead),
        deployment("down", mock_a[0])],
        "general_settings": {"master_key": "sk-h"}}
    gw = gateway_factory(cfg, [mock_a[0], dead])
    mock_a[1].take()
    assert requests.get(f"{gw.url}/health").status_code == 401
    r = requests.get(f"{gw.url}/health", headers={"Authorization": "Bearer sk-h"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["healthy_count"] == 2 and body["unhealthy_count"] == 1
    (bad,) = body["unhealthy_endpoints"]
    assert bad["model_id"] == "down/1" and bad["error"]
    paths = sorted(seen["path"] for seen in mock_a[1].take())
    assert paths == ["/health", "/v1/models"]
    # The failed probe cooled the stopped deployment down: traffic avoids it.
    for _ in range(10):
        r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "down"},
                          headers={"Authorization": "Bearer sk-h"})
        assert r.headers["x-llm-deployment"] == "down/2"
    mock_a[1].take()


PANIC_EVENTS = ["request_headers", "request_body", "response_headers", "response_body"]


def test_a_panic_in_the_gateway_costs_one_request_on_native_and_one_vm_reload_on_wasm(gateway_factory, mock_a):
    """A bug in the gateway, injected in each event the session handles (LLM_GATEWAY_TEST_PANICS=1
    in its environment turns on x-llm-test-panic). Native: the hook catches the panic and answers
    that request an OpenAI-format 500; the next request is served at once. Wasm: the panic kills
    the worker's VM; the shipped failure_policy FAIL_RELOAD replaces it, so requests are served
    again after about a second (Envoy's default would fail every later request on that worker
    with an empty 503). Envoy itself lives through all of it, on both."""
    cfg = {"model_list": [deployment("g", mock_a[0])]}
    gw = gateway_factory(cfg, [mock_a[0]], concurrency=1, env={"LLM_GATEWAY_TEST_PANICS": "1"})

    def chat(**headers):
        return requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "g"}, headers=headers, timeout=10)

    for event in PANIC_EVENTS:
        r = chat(**{"x-llm-test-panic": event})
        if NATIVE:
            assert r.status_code == 500, (event, r.status_code, r.text)
            assert r.json()["error"]["type"] == "api_error", r.text
            assert chat().status_code == 200, event
        else:
            assert r.status_code == 503, (event, r.status_code, r.text)
            wait_until(lambda: chat().status_code == 200, 10, f"a new VM after a panic in {event}")
        assert gw.proc.poll() is None, event
    log = open(gw.log_path).read()
    assert "LLM_GATEWAY_TEST_PANICS is set" in log
    assert all(f"a panic injected in {e.title().replace('_', '')}" in log for e in PANIC_EVENTS), log[-3000:]
    mock_a[1].take()


def test_a_client_cannot_make_the_gateway_panic_without_the_switch(gateway_factory, mock_a):
    gw = gateway_factory({"model_list": [deployment("g", mock_a[0])]}, [mock_a[0]], concurrency=1)
    for event in PANIC_EVENTS:
        r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "g"},
                          headers={"x-llm-test-panic": event}, timeout=10)
        assert r.status_code == 200, (event, r.text)
    assert "panic" not in open(gw.log_path).read()
    mock_a[1].take()
