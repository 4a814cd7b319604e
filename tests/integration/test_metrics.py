"""Usage and metrics on the real Envoy: Prometheus counters per label, streamed tokens,
the injected usage chunk stripped again, errors by type, histograms, access-log fields."""

import json
import time

import pytest
import requests

from conftest import stream_events
from harness import metrics_settled, prometheus_lines

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def prometheus(gw):
    metrics_settled()
    out = {}
    for line in prometheus_lines(requests.get(f"{gw.admin}/stats/prometheus", timeout=5).text):
        if line.startswith("llm_gateway_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_counters_tokens_errors_and_access_log(gateway_factory, mock_a):
    cfg = {"model_list": [{"model_name": "chat", "litellm_params": {
        "model": "openai/served", "api_base": f"http://127.0.0.1:{mock_a[0]}"},
        "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}}],
        "general_settings": {"master_key": "sk-m", "virtual_keys": [
            {"key": "sk-team", "key_alias": "team.a/b"}]}}
    gw = gateway_factory(cfg, [mock_a[0]], stats_flush_ms=500)
    for _ in range(3):
        assert requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "chat"},
                             headers={"Authorization": "Bearer sk-team"}).status_code == 200
    resp, events = stream_events(gw.url, "/v1/chat/completions", {**CHAT, "model": "chat", "stream": True},
                                 {"Authorization": "Bearer sk-m"})
    assert resp.status == 200
    # The gateway asked the upstream for usage; the client did not, so it sees no usage chunk.
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert events[-1][1] == "[DONE]" and all(c["choices"] for c in chunks)
    # A client that asks gets it.
    _, events = stream_events(gw.url, "/v1/chat/completions",
                              {**CHAT, "model": "chat", "stream": True, "stream_options": {"include_usage": True}},
                              {"Authorization": "Bearer sk-m"})
    assert json.loads(events[-2][1])["usage"]["total_tokens"] == 10
    assert requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "nope"},
                         headers={"Authorization": "Bearer sk-m"}).status_code == 404
    mock_a[1].take()
    time.sleep(1.2)  # histograms appear at the next stats flush
    p = prometheus(gw)
    team = 'model_group="chat",deployment="chat_0",key_alias="team_a_b"'
    master = 'model_group="chat",deployment="chat_0",key_alias="master"'
    assert p[f'llm_gateway_requests{{{team},status_class="2xx"}}'] == 3
    assert p[f'llm_gateway_requests{{{master},status_class="2xx"}}'] == 2
    # The mock reports 5 + 6 tokens per chat answer, 5 + 5 per stream.
    assert p[f"llm_gateway_prompt_tokens{{{team}}}"] == 15
    assert p[f"llm_gateway_completion_tokens{{{team}}}"] == 18
    assert p[f"llm_gateway_completion_tokens{{{master}}}"] == 10, "streamed tokens are counted"
    assert p['llm_gateway_errors{model_group="none",origin="gateway",error_type="invalid_request_error"}'] == 1
    assert p['llm_gateway_request_duration_ms_count{model_group="chat",deployment="chat_0"}'] == 5
    assert p['llm_gateway_ttft_ms_count{model_group="chat",deployment="chat_0"}'] == 5
    assert p['llm_gateway_in_flight{model_group="chat",deployment="chat_0"}'] == 0
    log = gw.logs()
    fields = [line.split(" llm=", 1)[1] for line in log.splitlines() if " llm=" in line]
    assert "-" in fields, "a request the gateway answered itself has no record"
    records = [json.loads(f) for f in fields if f != "-"]
    team_records = [r for r in records if r["key_alias"] == "team_a_b"]
    assert len(team_records) == 3
    assert team_records[0] == {"model_group": "chat", "deployment": "chat/0", "key_alias": "team_a_b",
                               "prompt_tokens": 5, "completion_tokens": 6, "cost": pytest.approx(0.017)}
    streamed = [r for r in records if r["key_alias"] == "master"]
    assert len(streamed) == 2 and all(r["completion_tokens"] == 5 for r in streamed)
    assert "sk-team" not in log and "sk-m " not in log


def test_triton_stream_tokens_are_counted(gateway_factory, triton):
    cfg = {"model_list": [{"model_name": "gen", "litellm_params": {
        "model": "triton/echo", "api_base": f"http://127.0.0.1:{triton.port}/v2/models/echo_stream/generate"}}]}
    gw = gateway_factory(cfg, [triton.port])
    resp, events = stream_events(gw.url, "/v1/chat/completions", {**CHAT, "model": "gen", "stream": True})
    assert resp.status == 200 and events[-1][1] == "[DONE]"
    time.sleep(0.2)
    p = prometheus(gw)
    labels = 'model_group="gen",deployment="gen_0",key_alias="none"'
    assert p[f"llm_gateway_completion_tokens{{{labels}}}"] == 11  # one per streamed word
    assert p[f'llm_gateway_requests{{{labels},status_class="2xx"}}'] == 1


def test_response_cache(gateway_factory, mock_a):
    cfg = {"model_list": [
        {"model_name": "chat", "litellm_params": {"model": "openai/served", "api_base": f"http://127.0.0.1:{mock_a[0]}"}},
        {"model_name": "other", "litellm_params": {"model": "openai/o", "api_base": f"http://127.0.0.1:{mock_a[0]}"}}],
        "litellm_settings": {"cache": True, "cache_params": {"ttl": 60}},
        "general_settings": {"master_key": "sk-m", "virtual_keys": [
            {"key": "sk-a", "models": ["chat"]}, {"key": "sk-b", "models": ["chat", "other"]}]}}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()

    def post(body, key="sk-a"):
        return requests.post(f"{gw.url}/v1/chat/completions", data=body,
                             headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})

    first = post(b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.5}')
    assert first.status_code == 200 and first.headers["x-llm-cache"] == "miss"
    # The same request with other field order and whitespace is served from the cache.
    second = post(b'{ "temperature": 0.50, "messages": [ {"content": "hi", "role": "user"} ], "model": "chat" }')
    assert second.status_code == 200 and second.headers["x-llm-cache"] == "hit"
    assert second.json() == first.json()
    assert len(mock_a[1].take()) == 1, "the hit never reached the upstream"
    # LiteLLM's per-request controls: no-cache reads nothing (and stores again), caching:false skips.
    r = post(b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"cache":{"no-cache":true}}')
    assert r.headers["x-llm-cache"] == "miss"
    (seen,) = mock_a[1].take()
    assert b"no-cache" not in seen["body"], "cache controls never reach the upstream"
    assert "x-llm-cache" not in post(b'{"model":"chat","messages":[{"role":"user","content":"x"}],"caching":false}').headers
    # A key with a different model list never shares answers.
    r = post(b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"temperature":0.5}', key="sk-b")
    assert r.headers["x-llm-cache"] == "miss"
    # Streams are not cached.
    resp, events = stream_events(gw.url, "/v1/chat/completions",
                                 {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                                 {"Authorization": "Bearer sk-a"})
    assert resp.getheader("x-llm-cache") is None
    mock_a[1].take()
    assert prometheus(gw)['llm_gateway_cache_hits{model_group="chat"}'] == 1
