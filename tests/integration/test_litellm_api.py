"""LiteLLM's HTTP API as LiteLLM's clients see it (issue 21), on the real Envoy: keys as
LiteLLM mints them, LiteLLM's error types, `mock_response`, the AzureOpenAI client's routes.
Written from LiteLLM's documented behaviour, with the OpenAI SDK, the AzureOpenAI client and
plain HTTP as clients."""

import json
import time

import openai
import pytest
import requests

MASTER = "sk-1234"
MSGS = [{"role": "user", "content": "hi"}]


def config(port, **litellm_settings):
    return {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": "openai/served", "api_base": f"http://127.0.0.1:{port}"},
             "model_info": {"input_cost_per_token": 0.01, "output_cost_per_token": 0.01}},
            {"model_name": "other", "litellm_params": {"model": "openai/other", "api_base": f"http://127.0.0.1:{port}"}},
        ],
        "litellm_settings": litellm_settings,
        "general_settings": {"master_key": MASTER, "virtual_keys": [
            {"key": "sk-old", "models": ["chat"], "expires": "2020-01-01T00:00:00Z"}]},
    }


def served_too(cfg, port, name, model):
    """`cfg` with one more group, `name`, served by the mock as `openai/<model>`."""
    cfg["model_list"].append({"model_name": name, "litellm_params": {
        "model": f"openai/{model}", "api_base": f"http://127.0.0.1:{port}"}})
    return cfg


def mint(gw, **body):
    r = requests.post(f"{gw.url}/key/generate", json=body, headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    return r.json()


def client(gw, key):
    return openai.OpenAI(api_key=key, base_url=f"{gw.url}/v1", max_retries=0)


def test_keys_are_minted_and_described_as_litellm_does(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0], upperbound_key_generate_params={"rpm_limit": 100},
                                default_key_generate_params={"max_budget": 5.0}), [mock_a[0]])
    minted = mint(gw, models=["chat"], metadata={"team": "search"}, user_id="u-1", key_alias="svc")
    # No duration: a key that never expires (LiteLLM's generate_key_helper_fn).
    assert minted["expires"] is None
    assert minted["token"] and minted["token"] not in minted["key"][:12], "token is the key's id, not the key"
    assert minted["key_name"] == "sk-..." + minted["key"][-4:]
    assert minted["created_at"].endswith("Z") and minted["updated_at"] == minted["created_at"]
    assert (minted["max_budget"], minted["rpm_limit"]) == (5.0, 100), "the default and the bound fill in"
    assert minted["metadata"] == {"team": "search"} and minted["user_id"] == "u-1"
    info = requests.get(f"{gw.url}/key/info", headers={"Authorization": f"Bearer {minted['key']}"}).json()["info"]
    assert (info["metadata"], info["user_id"], info["key_alias"]) == ({"team": "search"}, "u-1", "svc")
    # A request over the operator's bound: 400 naming the field and both values.
    r = requests.post(f"{gw.url}/key/generate", json={"rpm_limit": 1000}, headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rpm_limit"
    assert "user_value=1000; max_value=100" in r.json()["error"]["message"]
    assert client(gw, minted["key"]).chat.completions.create(model="chat", messages=MSGS).choices
    mock_a[1].take()


def test_litellm_error_types_reach_openai_sdk_clients(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    mock_a[1].take()
    key = mint(gw, models=["chat"], max_budget=0.2)["key"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(gw, key).chat.completions.create(model="other", messages=MSGS)
    body = e.value.body
    assert (body["type"], body["code"], body["param"]) == ("key_model_access_denied", "403", "model")
    assert "key not allowed to access model" in body["message"]
    # The mock reports 5 + 6 tokens at 0.01 each: two requests spend the 0.2 budget.
    for _ in range(2):
        client(gw, key).chat.completions.create(model="chat", messages=MSGS)
    with pytest.raises(openai.BadRequestError) as e:
        client(gw, key).chat.completions.create(model="chat", messages=MSGS)
    assert e.value.status_code == 400
    assert (e.value.body["type"], e.value.body["code"]) == ("budget_exceeded", "400")
    assert e.value.body["message"].startswith("Budget has been exceeded! Current cost: 0.22")
    with pytest.raises(openai.AuthenticationError) as e:
        client(gw, "sk-old").chat.completions.create(model="chat", messages=MSGS)
    assert e.value.body["type"] == "expired_key" and "Expired Key" in e.value.body["message"]
    assert len(mock_a[1].take()) == 2


def test_mock_response_is_answered_locally_for_callers_trusted_with_it(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    mock_a[1].take()
    mocked = {"mock_response": "this is a mock"}
    r = client(gw, MASTER).chat.completions.create(model="chat", messages=MSGS, extra_body=mocked)
    assert r.choices[0].message.content == "this is a mock" and r.model == "chat"
    chunks = list(client(gw, MASTER).chat.completions.create(model="chat", messages=MSGS, stream=True,
                                                              extra_body=mocked))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "this is a mock"
    trusted = mint(gw, models=["chat"], metadata={"allow_client_mock_response": True})["key"]
    r = client(gw, trusted).chat.completions.create(model="chat", messages=MSGS, extra_body=mocked)
    assert r.choices[0].message.content == "this is a mock"
    assert mock_a[1].take() == [], "nothing reached the upstream"
    # A key not trusted with mocks: LiteLLM strips the field; the request goes upstream.
    plain = mint(gw, models=["chat"])["key"]
    r = client(gw, plain).chat.completions.create(model="chat", messages=MSGS, extra_body=mocked)
    assert r.choices[0].message.content != "this is a mock"
    (sent,) = mock_a[1].take()
    assert "mock_response" not in json.loads(sent["body"])
    # LiteLLM's other test switches are refused by name, never forwarded.
    with pytest.raises(openai.BadRequestError) as e:
        client(gw, MASTER).chat.completions.create(model="chat", messages=MSGS,
                                                   extra_body={"mock_testing_fallbacks": True})
    assert e.value.body["param"] == "mock_testing_fallbacks"
    assert mock_a[1].take() == []


def test_the_azure_openai_client_reaches_the_gateway(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    mock_a[1].take()
    key = mint(gw, models=["chat"])["key"]
    azure = openai.AzureOpenAI(api_key=key, azure_endpoint=gw.url, api_version="2024-06-01", max_retries=0)
    r = azure.chat.completions.create(model="chat", messages=MSGS)
    assert r.choices and r.choices[0].message.content
    emb = azure.embeddings.create(model="chat", input="x")
    assert emb.data
    chat, embed = mock_a[1].take()
    assert chat["path"] == "/v1/chat/completions" and json.loads(chat["body"])["model"] == "served"
    assert embed["path"] == "/v1/embeddings"
    assert chat["headers"].get("api-key") is None, "the client's key never reaches the upstream"
    # The path names the model, and the key's allow-list still holds.
    with pytest.raises(openai.PermissionDeniedError):
        azure.chat.completions.create(model="other", messages=MSGS)
    assert mock_a[1].take() == []


def test_the_gateways_litellm_headers_replace_an_upstreams_own(gateway_factory, mock_a):
    """An upstream that is itself a LiteLLM proxy sends x-litellm-* headers: the client gets
    the gateway's value once, never the upstream's beside it."""
    cfg = served_too(config(mock_a[0]), mock_a[0], "behind", "litellm-upstream")
    gw = gateway_factory(cfg, [mock_a[0]])
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "behind", "messages": MSGS},
                      headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    raw = r.raw.headers
    assert raw.getlist("x-litellm-model-id") == ["behind/2"], raw.getlist("x-litellm-model-id")
    assert len(raw.getlist("x-litellm-version")) == 1 and raw["x-litellm-version"] != "0.0.0-upstream"
    assert len(raw.getlist("x-litellm-call-id")) == 1
    mock_a[1].take()


def test_routed_answers_carry_litellm_headers(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    cfg["model_list"].append({"model_name": "slow", "litellm_params": {
        "model": "openai/slow", "api_base": f"http://127.0.0.1:{mock_a[0]}"}, "model_info": {"id": "slow-1"}})
    cfg["router_settings"] = {"num_retries": 2}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    key = mint(gw, models=["chat", "slow"])["key"]
    r = client(gw, key).chat.completions.with_raw_response.create(model="chat", messages=MSGS)
    h = r.headers
    assert h["x-litellm-model-group"] == "chat" == h["x-llm-model-group"]
    assert h["x-litellm-model-id"] == h["x-llm-deployment"] == "chat/0"
    assert h["x-litellm-version"] and h["x-litellm-call-id"]
    assert (h["x-litellm-attempted-retries"], h["x-litellm-max-retries"]) == ("0", "2")
    assert h["x-litellm-timeout"] == "600.0"
    # 5 prompt + 6 completion tokens at 0.01 USD each.
    assert abs(float(h["x-litellm-response-cost"]) - 0.11) < 1e-9
    assert "x-litellm-model-api-base" not in h, "only the master key sees where a model lives"
    assert "x-litellm-key-spend" not in h, "the key has no budget: its spend is not kept"
    budgeted = mint(gw, models=["chat"], max_budget=10)["key"]
    spends = [client(gw, budgeted).chat.completions.with_raw_response.create(model="chat", messages=MSGS)
              .headers["x-litellm-key-spend"] for _ in range(2)]
    assert [float(s) for s in spends] == [0.0, 0.11], "the spend when each request came in"
    r = client(gw, MASTER).chat.completions.with_raw_response.create(model="chat", messages=MSGS)
    assert r.headers["x-litellm-model-api-base"] == f"http://127.0.0.1:{mock_a[0]}"
    # LiteLLM's x-litellm-timeout request header: the mock answers `slow` after 3 s.
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "slow", "messages": MSGS},
                      headers={"Authorization": f"Bearer {key}", "x-litellm-timeout": "0.5"})
    assert r.status_code == 408, r.text
    mock_a[1].take()


def test_a_group_of_one_deployment_is_retried_on_it_honouring_retry_after(gateway_factory, mock_a):
    import time
    import uuid
    tag = uuid.uuid4().hex[:8]
    cfg = {"model_list": [
        {"model_name": "one", "litellm_params": {"model": f"openai/flaky-429:2:{tag}",
                                                 "api_base": f"http://127.0.0.1:{mock_a[0]}"}},
        {"model_name": "none", "litellm_params": {"model": f"openai/flaky-429:1:{tag}-n",
                                                  "api_base": f"http://127.0.0.1:{mock_a[0]}"}}],
        "router_settings": {"num_retries": 2}}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    started = time.monotonic()
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "one", "messages": MSGS})
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert len(mock_a[1].take()) == 3, "two 429s, then the answer, all on the one deployment"
    assert r.headers["x-litellm-attempted-retries"] == "2", "Envoy's two retries are reported"
    # Each 429 said `retry-after: 1`: Envoy waited for it (its default backoff is 25-250 ms).
    assert elapsed >= 1.8, elapsed
    # The request's own num_retries wins: 0 sends the upstream's 429 straight back.
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "none", "messages": MSGS, "num_retries": 0})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert len(mock_a[1].take()) == 1


def test_max_parallel_requests_holds_across_workers(gateway_factory, mock_a):
    from concurrent.futures import ThreadPoolExecutor
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "slow", "slow")
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    key = mint(gw, max_parallel_requests=2)["key"]

    def call(_):
        return requests.post(f"{gw.url}/v1/chat/completions", json={"model": "slow", "messages": MSGS},
                             headers={"Authorization": f"Bearer {key}", "connection": "close"}, timeout=20)
    # Four at once over fresh connections (both workers): the mock holds each for 3 s.
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = sorted(r.status_code for r in pool.map(call, range(4)))
    assert codes == [200, 200, 429, 429], codes
    # Both ended: the key has its two slots back.
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert [r.status_code for r in pool.map(call, range(2))] == [200, 200]
    assert len(mock_a[1].take()) == 4


def test_a_fallback_with_its_own_messages_is_sent_them(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "broken", "fail-500")
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    own = [{"role": "user", "content": "the fallback's own prompt"}]
    raw = client(gw, MASTER).chat.completions.with_raw_response.create(
        model="broken", messages=MSGS, extra_body={"fallbacks": [{"model": "chat", "messages": own}],
                                                   "num_retries": 0})
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    assert raw.headers["x-litellm-model-group"] == "chat"
    first, second = mock_a[1].take()
    assert json.loads(first["body"])["messages"] == MSGS
    sent = json.loads(second["body"])
    assert sent["messages"] == own and sent["model"] == "served" and "fallbacks" not in sent


def test_litellm_test_switches_when_the_operator_turns_them_on(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    cfg["model_list"].append({"model_name": "quick", "litellm_params": {
        "model": "openai/served", "api_base": f"http://127.0.0.1:{mock_a[0]}", "timeout": 1}})
    cfg["general_settings"]["litellm_test_switches"] = True
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    # mock_testing_fallbacks: the first model fails as if it had, the fallback answers.
    raw = client(gw, MASTER).chat.completions.with_raw_response.create(
        model="chat", messages=MSGS, extra_body={"mock_testing_fallbacks": True, "fallbacks": ["other"]})
    assert raw.headers["x-litellm-model-group"] == "other"
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    (sent,) = mock_a[1].take()
    assert json.loads(sent["body"])["model"] == "other", "nothing went to the first model"
    # Without a fallback to go to: LiteLLM's mock failure.
    with pytest.raises(openai.InternalServerError):
        client(gw, MASTER).chat.completions.create(model="chat", messages=MSGS,
                                                   extra_body={"mock_testing_fallbacks": True})
    # A fallback the key may not use is still refused before anything.
    key = mint(gw, models=["chat"])["key"]
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, key).chat.completions.create(model="chat", messages=MSGS,
                                                extra_body={"mock_testing_fallbacks": True, "fallbacks": ["other"]})
    # mock_timeout: 408 with the timeout the request would have had.
    for headers, timeout in [({}, "1.0"), ({"x-litellm-timeout": "0.001"}, "0.001")]:
        r = requests.post(f"{gw.url}/chat/completions", headers={"Authorization": f"Bearer {MASTER}", **headers},
                          json={"model": "quick", "messages": MSGS, "num_retries": 0, "mock_timeout": True})
        assert r.status_code == 408 and r.headers["x-litellm-timeout"] == timeout, (r.status_code, r.headers)
    assert mock_a[1].take() == []


def test_keys_may_name_model_patterns_and_names_a_wildcard_serves(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "*", "*")
    gw = gateway_factory(cfg, [mock_a[0]])
    trusted = {"allow_client_mock_response": True}
    mocked = {"mock_response": "ok"}
    for models, model, allowed in [(["openai/*"], "anthropic/claude-2", False),
                                   (["bedrock/anthropic.*"], "bedrock/anthropic.claude-3", True),
                                   (["bedrock/anthropic.*"], "bedrock/amazon.titan", False),
                                   (["gpt-5.5"], "gpt-5.5", True), (["gpt-5.5"], "chat", False)]:
        key = mint(gw, models=models, metadata=trusted)["key"]
        if allowed:
            r = client(gw, key).chat.completions.create(model=model, messages=MSGS, extra_body=mocked)
            assert r.choices[0].message.content == "ok", (models, model)
        else:
            with pytest.raises(openai.PermissionDeniedError) as e:
                client(gw, key).chat.completions.create(model=model, messages=MSGS, extra_body=mocked)
            assert e.value.body["type"] == "key_model_access_denied", (models, model)
    mock_a[1].take()


def test_a_comma_in_model_fans_out_and_answers_the_list(gateway_factory, mock_a):
    # A wildcard group is present: a comma still means LiteLLM's fan-out, not a name for `*`.
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "*", "*")
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    body = {"model": "chat, other", "messages": MSGS}
    r = requests.post(f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [a["model"] for a in answers] == ["served", "other"], answers
    sent = sorted(json.loads(q["body"])["model"] for q in mock_a[1].take())
    assert sent == ["other", "served"], "one upstream request per model, each naming its own"
    # A key allowed `chat` only: `other` is refused in its place, `chat` still answers.
    key = mint(gw, models=["chat"])["key"]
    r = requests.post(f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    answers = r.json()
    assert r.status_code == 200 and answers[0]["object"] == "chat.completion"
    assert answers[1]["error"]["type"] == "key_model_access_denied"
    assert [json.loads(q["body"])["model"] for q in mock_a[1].take()] == ["served"]
    # Several streams cannot share one answer.
    r = requests.post(f"{gw.url}/v1/chat/completions", json={**body, "stream": True},
                      headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_a_keys_aliases_rename_the_model_it_asks_for(gateway_factory, mock_a):
    gw = gateway_factory(config(mock_a[0]), [mock_a[0]])
    minted = mint(gw, models=["chat"], aliases={"fast": "chat", "wide": "other"})
    assert minted["aliases"] == {"fast": "chat", "wide": "other"}
    r = client(gw, minted["key"]).chat.completions.create(model="fast", messages=MSGS)
    assert r.model == "served"
    # An alias never widens the key: `other` is not among its models.
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, minted["key"]).chat.completions.create(model="wide", messages=MSGS)
    mock_a[1].take()


def test_allowed_fails_policy_cools_a_deployment_on_its_first_rate_limit(gateway_factory, mock_a):
    base = f"http://127.0.0.1:{mock_a[0]}"
    cfg = {
        "model_list": [
            {"model_name": "g", "litellm_params": {"model": "openai/flaky-429:5:afp", "api_base": base, "order": 1}},
            {"model_name": "g", "litellm_params": {"model": "openai/steady", "api_base": base, "order": 2}},
        ],
        "router_settings": {"cooldown_time": 30, "allowed_fails_policy": {"RateLimitErrorAllowedFails": 0}},
        "general_settings": {"master_key": MASTER},
    }
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    for _ in range(2):
        assert client(gw, MASTER).chat.completions.create(model="g", messages=MSGS).model == "steady"
    sent = [json.loads(q["body"])["model"] for q in mock_a[1].take()]
    # The first request met the 429 and failed over; the second went straight to `steady`.
    assert sent == ["flaky-429:5:afp", "steady", "steady"], sent


def test_a_fan_out_fails_over_within_a_model_and_lists_a_model_that_failed(gateway_factory, mock_a):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once the socket closes
    up = f"http://127.0.0.1:{mock_a[0]}"
    cfg = {
        "model_list": [
            # `two`: its first deployment (by order) is down; failover finds the second.
            {"model_name": "two", "litellm_params": {"model": "openai/down", "api_base": f"http://127.0.0.1:{dead}", "order": 1}},
            {"model_name": "two", "litellm_params": {"model": "openai/up", "api_base": up, "order": 2}},
            # `gone`: its only deployment is down.
            {"model_name": "gone", "litellm_params": {"model": "openai/gone", "api_base": f"http://127.0.0.1:{dead}"}},
            {"model_name": "chat", "litellm_params": {"model": "openai/served", "api_base": up}},
        ],
        "router_settings": {"num_retries": 1},
        "general_settings": {"master_key": MASTER},
    }
    gw = gateway_factory(cfg, [mock_a[0], dead])
    mock_a[1].take()
    r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "two,gone,chat", "messages": MSGS},
                      headers={"Authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    two, gone, chat = r.json()
    assert two["model"] == "up", two
    assert gone["error"]["type"] in ("service_unavailable_error", "api_error"), gone
    assert chat["model"] == "served"
    assert sorted(json.loads(q["body"])["model"] for q in mock_a[1].take()) == ["served", "up"]


def test_a_fan_out_the_client_leaves_releases_what_its_models_held(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "slow", "slow")
    gw = gateway_factory(cfg, [mock_a[0]])
    key = mint(gw, max_parallel_requests=1)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    # `slow` answers after 3 s; the client gives up first, with the slow model in flight.
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(f"{gw.url}/v1/chat/completions", json={"model": "slow,chat", "messages": MSGS},
                      headers=auth, timeout=0.5)
    # The key's one slot is free again as soon as Envoy has seen the client go (its worker
    # may notice the closed connection a moment after another worker takes the next request),
    # well before the slow model's answer at 3 s would have freed it anyway.
    deadline = time.monotonic() + 1.5
    while True:
        r = requests.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": MSGS},
                          headers=auth)
        if r.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    mock_a[1].take()


def test_fastest_response_answers_with_the_first_model_to_succeed(gateway_factory, mock_a):
    cfg = config(mock_a[0])
    served_too(cfg, mock_a[0], "slow", "slow")
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    key = mint(gw, max_parallel_requests=2)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    r = requests.post(f"{gw.url}/v1/chat/completions", headers=auth,
                      json={"model": "slow,chat", "messages": MSGS, "fastest_response": True})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "served", "one answer, not a list: the fast model's"
    assert all(b"fastest_response" not in q["body"] for q in mock_a[1].take()), "never sent upstream"
    # The slow model's slot was given back when the fast one answered: both of the key's two
    # slots are free for two models at once (the slow one would still hold one for 3 s).
    r = requests.post(f"{gw.url}/v1/chat/completions", headers=auth, json={"model": "chat,chat", "messages": MSGS})
    assert [a.get("object") for a in r.json()] == ["chat.completion"] * 2, r.text
    mock_a[1].take()
