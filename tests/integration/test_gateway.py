"""The walking skeleton against the real Envoy and the real .wasm: front door, aliases, keys,
OpenAI-compatible rewrite, streaming, /vllm pass-through, errors, weighted selection."""

import json
import math
import subprocess

import pytest
import requests

from conftest import stream_events
from harness import ROOT, envoy_bin, envoy_config, envoy_env, free_port

MASTER = "sk-test-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def config(port_a, port_b, **general):
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {
                "model": "hosted_vllm/served-chat", "api_base": f"http://127.0.0.1:{port_a}/v1",
                "api_key": "os.environ/UPSTREAM_KEY"}},
            {"model_name": "embed", "litellm_params": {
                "model": "openai/served-embed", "api_base": f"http://127.0.0.1:{port_b}"},
             "model_info": {"id": "embed-b"}},
            {"model_name": "broken", "litellm_params": {
                "model": "openai/fail-400", "api_base": f"http://127.0.0.1:{port_b}"}},
            {"model_name": "nowhere", "litellm_params": {
                "model": "openai/x", "api_base": f"http://127.0.0.1:{general.pop('dead_port', 9)}"}},
        ],
        "router_settings": {"model_group_alias": {
            "gpt-4o": "chat", "GPT-4O": {"model": "chat", "hidden": True}}},
        "general_settings": {"master_key": MASTER, **general},
    }


@pytest.fixture
def gw(gateway_factory, mock_a, mock_b):
    dead = free_port()
    cfg = config(mock_a[0], mock_b[0], dead_port=dead, max_request_body_bytes=200_000)
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0], dead], env={"UPSTREAM_KEY": "upstream-secret"})
    mock_a[1].take()
    mock_b[1].take()
    return gw


def error_of(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_chat_via_alias_rewrites_only_model_and_auth(gw, mock_a):
    body = b'{"messages":[{"role":"user","content":"hi"}],  "model":"gpt-4o","temperature":0.5}'
    r = requests.post(f"{gw.url}/v1/chat/completions", data=body,
                      headers={**AUTH, "x-llm-cluster": "127.0.0.1:1", "x-envoy-upstream-rq-timeout-ms": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "a says hello to served-chat"
    assert r.headers["x-llm-model-group"] == "chat"
    assert r.headers["x-llm-deployment"] == "chat/0"
    (seen,) = mock_a[1].take()
    assert seen["path"] == "/v1/chat/completions"
    # Byte-for-byte the client's body, with only the model value swapped.
    assert seen["body"] == body.replace(b'"gpt-4o"', b'"served-chat"')
    assert seen["headers"]["content-length"] == str(len(seen["body"]))
    assert seen["headers"]["authorization"] == "Bearer upstream-secret"
    assert "x-llm-cluster" not in seen["headers"]
    assert seen["headers"].get("x-envoy-upstream-rq-timeout-ms") != "1"


@pytest.mark.parametrize("path", ["/v1/completions", "/completions"])
def test_completions_with_and_without_v1(gw, mock_a, path):
    r = requests.post(gw.url + path, json={"model": "chat", "prompt": "x"}, headers={"api-key": MASTER})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion"
    (seen,) = mock_a[1].take()
    assert seen["path"] == "/v1/completions"
    assert "api-key" not in seen["headers"]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings"])
def test_embeddings_and_no_upstream_key(gw, mock_b, path):
    r = requests.post(gw.url + path, json={"model": "embed", "input": ["a", "b"]}, headers={"x-api-key": MASTER})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    assert r.headers["x-llm-deployment"] == "embed-b"
    (seen,) = mock_b[1].take()
    assert seen["path"] == "/v1/embeddings"
    assert json.loads(seen["body"])["model"] == "served-embed"
    assert "authorization" not in seen["headers"] and "x-api-key" not in seen["headers"]


def test_streaming_arrives_incrementally(gw):
    resp, events = stream_events(gw.url, "/v1/chat/completions", {**CHAT, "stream": True}, AUTH)
    assert resp.status == 200
    assert resp.getheader("content-type") == "text/event-stream"
    assert events[-1][1] == "[DONE]"
    contents = [json.loads(d)["choices"][0]["delta"]["content"] for _, d in events[:-1]]
    assert contents == [f"part{i} " for i in range(5)]
    # The mock sends a chunk every 0.2 s: had the gateway buffered, all would land together.
    spread = events[-2][0] - events[0][0]
    assert spread > 0.5, f"chunks arrived within {spread:.3f}s: buffered, not streamed"


def test_models_list_and_lookup(gw):
    r = requests.get(f"{gw.url}/v1/models", headers=AUTH)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["chat", "embed", "broken", "nowhere", "gpt-4o"]
    assert all(m["object"] == "model" and "created" in m and "owned_by" in m for m in r.json()["data"])
    assert requests.get(f"{gw.url}/models", headers=AUTH).json() == r.json()
    assert requests.get(f"{gw.url}/v1/models/gpt-4o", headers=AUTH).json()["id"] == "gpt-4o"
    error_of(requests.get(f"{gw.url}/v1/models/GPT-4O", headers=AUTH), 404)


def test_hidden_alias_still_routes(gw, mock_a):
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "GPT-4O"}, headers=AUTH)
    assert r.status_code == 200
    assert r.headers["x-llm-model-group"] == "chat"


def test_keys(gw):
    err = error_of(requests.get(f"{gw.url}/v1/models"), 401)
    assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    error_of(requests.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                           headers={"Authorization": "Bearer sk-wrong"}), 401)
    assert requests.get(f"{gw.url}/v1/models", headers={"x-api-key": MASTER}).status_code == 200
    for path, body in [("/health/liveliness", None), ("/health/readiness", None),
                       ("/v1/health/live", {"message": "Service is live."}),
                       ("/v1/health/ready", {"message": "Service is ready."})]:
        r = requests.get(gw.url + path)
        assert r.status_code == 200, path
        if body:
            assert r.json() == body
    assert requests.get(f"{gw.url}/health/readiness").json()["litellm_version"]
    # As LiteLLM's: no key needed (it lists endpoints, nothing of the configuration).
    assert requests.get(f"{gw.url}/routes").status_code == 200
    routes = requests.get(f"{gw.url}/routes", headers=AUTH).json()["routes"]
    assert {"path": "/v1/chat/completions", "methods": ["POST"], "name": "chat_completion"} in routes


def test_unknown_model_lists_available(gw):
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "gpt-5"}, headers=AUTH), 404)
    assert err["code"] == "model_not_found"
    assert "chat, embed" in err["message"] and "GPT-4O" not in err["message"]


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"model":"chat"}', b'{"model":"chat","messages":[]}',
                                  b'{"model":7,"messages":[{"role":"user","content":"x"}]}', b"[1,2]",
                                  b'{"model":"chat","messages":[{"role":"user","content":"\xff"}]}'])
def test_malformed_requests_are_400(gw, body):
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions", data=body, headers=AUTH), 400)
    assert err["type"] == "invalid_request_error"


def test_body_over_limit_is_413(gw):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 300_000}]}
    error_of(requests.post(f"{gw.url}/v1/chat/completions", json=big, headers=AUTH), 413)


def test_unknown_paths_and_methods(gw):
    err = error_of(requests.get(f"{gw.url}/v2/nothing", headers=AUTH), 404)
    assert err["type"] == "invalid_request_error"
    r = requests.get(f"{gw.url}/v1/chat/completions", headers=AUTH)
    error_of(r, 405)
    assert r.headers["allow"] == "POST"


def test_upstream_errors_are_openai_shaped(gw):
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "broken"}, headers=AUTH), 400)
    assert err["message"] == "mock refused the request"
    assert err["code"] == "400"
    err = error_of(requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "nowhere"}, headers=AUTH), 503)
    assert err["type"] == "service_unavailable_error"


def test_deployment_timeout_is_408_as_in_litellm(gateway_factory, mock_a):
    cfg = {"model_list": [{"model_name": "slow", "litellm_params": {
        "model": "openai/slow", "api_base": f"http://127.0.0.1:{mock_a[0]}", "timeout": 0.5}}]}
    gw = gateway_factory(cfg, [mock_a[0]])
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "slow"})
    # The mock answers 200 after 3 s: a 408 means the deployment's 0.5 s timeout cut it
    # (LiteLLM's litellm.Timeout status and code).
    err = error_of(r, 408)
    assert err["type"] == "timeout_error" and err["code"] == "408"
    mock_a[1].take()


def test_vllm_pass_through(gw, mock_a, mock_b):
    r = requests.get(f"{gw.url}/vllm/metrics", headers=AUTH)
    assert r.status_code == 200 and "vllm:num_requests_running" in r.text
    (seen,) = mock_a[1].take()
    assert seen["path"] == "/metrics" and "authorization" in seen["headers"]
    assert seen["headers"]["authorization"] == "Bearer upstream-secret"
    r = requests.post(f"{gw.url}/vllm/score", json={"model": "embed", "text_1": "a", "text_2": "b"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["data"][0]["score"] == 0.75
    (seen,) = mock_b[1].take()
    assert seen["path"] == "/score" and json.loads(seen["body"])["model"] == "served-embed"
    error_of(requests.get(f"{gw.url}/vllm/metrics"), 401)
    resp, events = stream_events(gw.url, "/vllm/v1/chat/completions", {**CHAT, "stream": True}, AUTH)
    assert resp.status == 200 and events[-1][1] == "[DONE]"


def test_weighted_split_within_binomial_tolerance(gateway_factory, mock_a, mock_b):
    cfg = {"model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{mock_a[0]}", "weight": 1}},
        {"model_name": "g", "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{mock_b[0]}", "weight": 3}},
    ]}
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0]])
    n, p = 400, 0.25
    session = requests.Session()
    counts = {"g/0": 0, "g/1": 0}
    for _ in range(n):
        r = session.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "g"})
        assert r.status_code == 200
        counts[r.headers["x-llm-deployment"]] += 1
    mock_a[1].take()
    mock_b[1].take()
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    # 4 standard deviations: a correct picker fails this about once in 16,000 runs.
    assert abs(counts["g/0"] - mean) < 4 * sd, counts


def test_bad_config_is_refused_naming_the_path(tmp_path):
    bad = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "ftp://x"}}]}
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(envoy_config(bad, [1], free_port(), free_port())))
    r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, cwd=ROOT,
                       env=envoy_env())
    assert r.returncode != 0
    assert "model_list[0].litellm_params.api_base" in r.stdout + r.stderr
