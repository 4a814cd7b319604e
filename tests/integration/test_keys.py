"""Keys without a database, on the real Envoy at --concurrency 2: minted keys verified by a
second Envoy, model allow-lists, per-key rpm shared by both workers, budgets, hygiene."""

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests

MASTER = "sk-keys-master"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def config(port, **general):
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": "openai/served", "api_base": f"http://127.0.0.1:{port}"},
             "model_info": {"input_cost_per_token": 0.01, "output_cost_per_token": 0.01}},
            {"model_name": "other", "litellm_params": {"model": "openai/other", "api_base": f"http://127.0.0.1:{port}"}},
        ],
        "router_settings": {"model_group_alias": {"gpt-4o": "chat"}},
        "general_settings": {"master_key": MASTER, **general},
    }


def mint(gw, **body):
    r = requests.post(f"{gw.url}/key/generate", json=body, headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    return r.json()


def chat(gw, key, model="chat"):
    return requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model},
                         headers={"Authorization": f"Bearer {key}", "connection": "close"})


def test_minted_key_works_on_a_second_envoy_with_the_same_master_key(gateway_factory, mock_a):
    gw1 = gateway_factory(config(mock_a[0]), [mock_a[0]])
    gw2 = gateway_factory(config(mock_a[0]), [mock_a[0]])
    minted = mint(gw1, models=["gpt-4o"], duration="30m", key_alias="team-a")
    key = minted["key"]
    assert key.startswith("sk-") and minted["token_id"] and minted["expires"].endswith("Z")
    assert chat(gw2, key).status_code == 200, "accepted by another Envoy, nothing stored"
    # A different master key means a different signing secret.
    gw3 = gateway_factory(config(mock_a[0], master_key="sk-another"), [mock_a[0]])
    r = chat(gw3, key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # Only the master key mints.
    r = requests.post(f"{gw1.url}/key/generate", json={}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    info = requests.get(f"{gw2.url}/key/info", headers={"Authorization": f"Bearer {key}"}).json()["info"]
    assert info["key_alias"] == "team-a" and info["models"] == ["gpt-4o"]
    info = requests.get(f"{gw2.url}/key/info", params={"key": key}, headers={"Authorization": f"Bearer {MASTER}"})
    assert info.status_code == 200 and info.json()["token_id"] == minted["token_id"]
    mock_a[1].take()


def test_model_allow_list_and_models_filtering(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    key = mint(gw, models=["gpt-4o"])["key"]
    assert chat(gw, key, "gpt-4o").status_code == 200
    assert chat(gw, key, "chat").status_code == 200, "the group behind an allowed alias"
    r = chat(gw, key, "other")
    assert r.status_code == 403 and r.json()["error"]["type"] == "key_model_access_denied"
    ids = [m["id"] for m in requests.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]]
    assert ids == ["chat", "gpt-4o"]
    all_ids = [m["id"] for m in requests.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {MASTER}"}).json()["data"]]
    assert all_ids == ["chat", "other", "gpt-4o"]
    mock_a[1].take()


def test_per_key_rpm_is_exact_across_workers(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    key = mint(gw, rpm_limit=5)["key"]
    # Twenty concurrent requests over fresh connections, spread over both workers.
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: chat(gw, key), range(20)))
    codes = sorted(r.status_code for r in statuses)
    assert codes.count(200) == 5 and codes.count(429) == 15, codes
    limited = next(r for r in statuses if r.status_code == 429)
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert len(mock_a[1].take()) == 5


def test_budget_is_exhausted_after_known_usage(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    # The mock reports 5 prompt + 6 completion tokens; at 0.01 USD each a request costs 0.11.
    key = mint(gw, max_budget=0.2)["key"]
    assert chat(gw, key).status_code == 200
    assert chat(gw, key).status_code == 200
    r = chat(gw, key)
    # LiteLLM's BudgetExceededError as its proxy answers it.
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("budget_exceeded", "400", None)
    assert err["message"].startswith("Budget has been exceeded! Current cost: 0.22")
    assert err["message"].endswith(", Max budget: 0.2")
    spend = requests.get(f"{gw.url}/key/info", headers={"Authorization": f"Bearer {key}"}).json()["info"]["spend"]
    assert abs(spend - 0.22) < 1e-9
    mock_a[1].take()


def test_static_keys_expiry_and_hygiene(gateway_factory, mock_a):
    digest = hashlib.sha256(b"sk-only-the-hash").hexdigest()
    cfg = config(mock_a[0], virtual_keys=[
        {"key_sha256": digest, "key_alias": "ci", "models": ["chat"]},
        {"key": "sk-old", "expires": "2020-01-01T00:00:00Z"}])
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "chat"},
                      headers={"x-api-key": "sk-only-the-hash", "api-key": "sk-only-the-hash"})
    assert r.status_code == 200
    (seen,) = mock_a[1].take()
    # The upstream never sees the client's key, in any header.
    assert "sk-only-the-hash" not in json.dumps(seen["headers"])
    assert not {"authorization", "api-key", "x-api-key"} & set(seen["headers"])
    r = chat(gw, "sk-old")
    assert r.status_code == 401 and r.json()["error"]["type"] == "expired_key"
    short = mint(gw, duration="1s")["key"]
    time.sleep(2.1)
    r = chat(gw, short)
    assert r.status_code == 401 and r.json()["error"]["type"] == "expired_key"
    # Keys never appear in error messages or the log.
    assert short not in r.text
    assert "sk-only-the-hash" not in gw.logs() and short not in gw.logs() and MASTER not in gw.logs()


def test_key_in_the_configured_header(gateway_factory, mock_a):
    """general_settings.litellm_key_header_name: the key is read from that header too (with or
    without Bearer), and the header never reaches the upstream."""
    gw = gateway_factory(config(mock_a[0], litellm_key_header_name="X-Litellm-Key"), [mock_a[0]])
    mock_a[1].take()
    for value in [MASTER, f"Bearer {MASTER}"]:
        r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "chat"},
                          headers={"x-litellm-key": value})
        assert r.status_code == 200, r.text
    seen = mock_a[1].take()
    assert len(seen) == 2 and all("x-litellm-key" not in s["headers"] for s in seen)
    assert MASTER not in json.dumps([s["headers"] for s in seen])
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "chat"},
                      headers={"x-litellm-key": "sk-wrong", "Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 401, "the configured header is read first"
    assert mock_a[1].take() == []
