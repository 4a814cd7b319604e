"""Who may reach what, on the real Envoy and .wasm: every endpoint × every principal (none,
wrong, expired, revoked, restricted, master, and an open gateway), asserting the status, the
error type, what each answer shows, and — by two recording upstreams — that nothing reached
an upstream the principal may not use. Also body fallbacks, a cache hit across keys, and a
key whose allowed group has a configured fallback."""

import json

import pytest
import requests

from harness import wait_until

MASTER = "sk-authz-master"
RESTRICTED = "sk-restricted"  # static key: models [group-a]
FLAKY_KEY = "sk-flaky"  # static key: models [flaky]; flaky's configured fallback is group-b
EXPIRED = "sk-expired"

PUBLIC = ["/health/liveliness", "/health/readiness", "/v1/health/live", "/v1/health/ready", "/routes"]


def config(a_port, b_port, revoked=(), keys=True, cache=True):
    cfg = {
        # group-b first: "the first vLLM deployment" differs between the master key and a key
        # allowed only group-a.
        "model_list": [
            {"model_name": "group-b", "litellm_params": {"model": "hosted_vllm/served-b",
                                                         "api_base": f"http://127.0.0.1:{b_port}/v1"}},
            {"model_name": "group-a", "litellm_params": {"model": "hosted_vllm/served-a",
                                                         "api_base": f"http://127.0.0.1:{a_port}/v1"}},
            # The mock fails every request for this model: it always falls back to group-b.
            {"model_name": "flaky", "litellm_params": {"model": "hosted_vllm/fail-500",
                                                       "api_base": f"http://127.0.0.1:{a_port}/v1"}},
        ],
        "router_settings": {"fallbacks": [{"flaky": ["group-b"]}], "num_retries": 0},
        "litellm_settings": {"cache": cache},
    }
    if keys:
        cfg["general_settings"] = {
            "master_key": MASTER,
            "virtual_keys": [
                {"key": RESTRICTED, "key_alias": "restricted", "models": ["group-a"]},
                {"key": FLAKY_KEY, "key_alias": "flaky", "models": ["flaky"]},
                {"key": EXPIRED, "models": ["group-a"], "expires": "2020-01-01T00:00:00Z"},
            ],
            "revoked_keys": list(revoked),
        }
    return cfg


def call(gw, method, path, key=None, body=None, headers=None):
    h = {"connection": "close", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if body is None:
        return requests.request(method, gw.url + path, headers=h, timeout=30)
    return requests.request(method, gw.url + path, headers=h, data=json.dumps(body),
                            timeout=30)


def chat_body(model, text, **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def error_type(r):
    return r.json()["error"]["type"]


def served(recorder):
    """The requests an upstream received since the last call, as (method, path, model)."""
    out = []
    for entry in recorder.take():
        try:
            model = json.loads(entry["body"] or b"{}").get("model")
        except (ValueError, AttributeError):
            model = None
        out.append((entry["method"], entry["path"], model))
    return out


@pytest.fixture
def keyed(gateway_factory, mock_a, mock_b):
    """A gateway with keys: a minted restricted key and a revoked one, minted by one Envoy and
    then used on another (the same master key) whose config revokes the second."""
    a_port, b_port = mock_a[0], mock_b[0]
    minter = gateway_factory(config(a_port, b_port), [a_port, b_port])

    def mint(**body):
        r = call(minter, "POST", "/key/generate", MASTER, body)
        assert r.status_code == 200, r.text
        return r.json()

    minted = mint(models=["group-a"], key_alias="minted")
    revoked = mint(key_alias="revoked")
    other = mint(models=["group-b"], key_alias="other")
    minter.stop()
    gw = gateway_factory(config(a_port, b_port, revoked=[revoked["token_id"]]), [a_port, b_port])
    mock_a[1].take(), mock_b[1].take()
    return gw, {"minted": minted["key"], "revoked": revoked["key"], "other": other["key"]}


def test_who_may_call_what(keyed, mock_a, mock_b):
    gw, minted = keyed
    rejected = {None: "No API key", "sk-wrong": None, EXPIRED: "expired", minted["revoked"]: "revoked"}
    for path in PUBLIC:
        for key in [None, "sk-wrong", EXPIRED, RESTRICTED, MASTER]:
            r = call(gw, "GET", path, key)
            assert r.status_code == 200, (path, key, r.text)

    endpoints = [
        ("POST", "/v1/chat/completions", chat_body("group-a", "matrix")),
        ("POST", "/chat/completions", chat_body("group-a", "matrix bare")),
        ("POST", "/v1/completions", {"model": "group-a", "prompt": "matrix"}),
        ("POST", "/v1/embeddings", {"model": "group-a", "input": "matrix"}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/group-a", None),
        ("GET", "/v1/model/info", None),
        ("GET", "/v1/model_group/info", None),
        ("POST", "/vllm/score", {"model": "group-a", "text_1": "a", "text_2": "b"}),
        ("GET", "/vllm/metrics", None),
        ("GET", "/health", None),
        ("POST", "/key/generate", {}),
        ("GET", "/key/info", None),
    ]
    # Nobody without a valid key reaches anything, nor any upstream.
    for method, path, body in endpoints:
        for key, why in rejected.items():
            r = call(gw, method, path, key, body)
            assert r.status_code == 401, (method, path, key, r.text)
            # An expired key is LiteLLM's `expired_key`; every other refusal OpenAI's.
            if error_type(r) == "expired_key":
                assert r.json()["error"]["code"] == "401" and "Expired Key" in r.json()["error"]["message"]
            else:
                assert error_type(r) == "authentication_error"
                assert r.json()["error"]["code"] == "invalid_api_key"
            if why and error_type(r) != "expired_key":
                assert why in r.json()["error"]["message"], r.text
    assert served(mock_a[1]) == [] and served(mock_b[1]) == []


@pytest.mark.parametrize("restricted", [RESTRICTED, "minted"])
def test_a_restricted_key_reaches_and_sees_only_its_group(keyed, mock_a, mock_b, restricted):
    gw, minted = keyed
    key = minted.get(restricted, restricted)

    # The OpenAI endpoints: its group is served by its upstream only.
    for path, body in [("/v1/chat/completions", chat_body("group-a", f"only a {restricted}")),
                       ("/v1/completions", {"model": "group-a", "prompt": f"only a {restricted}"}),
                       ("/v1/embeddings", {"model": "group-a", "input": "x"})]:
        r = call(gw, "POST", path, key, body)
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-model-group"] == "group-a"
    assert [m for _, _, m in served(mock_a[1])] == ["served-a"] * 3
    # LiteLLM's fan-out: each model checked alone; the one the key may not use is refused in
    # its place and never sent.
    r = call(gw, "POST", "/v1/chat/completions", key, chat_body("group-a,group-b", f"fan {restricted}"))
    assert r.status_code == 200, r.text
    a, b = r.json()
    assert a["object"] == "chat.completion" and b["error"]["type"] == "key_model_access_denied"
    assert [m for _, _, m in served(mock_a[1])] == ["served-a"]
    for path, body in [("/v1/chat/completions", chat_body("group-b", "not b")),
                       ("/v1/embeddings", {"model": "flaky", "input": "x"})]:
        r = call(gw, "POST", path, key, body)
        assert r.status_code == 403, r.text
        # LiteLLM's type, code and param for a model the key may not use.
        err = r.json()["error"]
        assert (err["type"], err["code"], err["param"]) == ("key_model_access_denied", "403", "model")
        assert "key not allowed to access model" in err["message"]
    r = call(gw, "POST", "/v1/chat/completions", key, chat_body("nonexistent", "x"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    message = r.json()["error"]["message"]
    assert message.endswith("Available models: group-a") and "group-b" not in message

    # What it may see is what it may use; no upstream address anywhere.
    r = call(gw, "GET", "/v1/models", key)
    assert [m["id"] for m in r.json()["data"]] == ["group-a"]
    assert call(gw, "GET", "/v1/models/group-a", key).status_code == 200
    r = call(gw, "GET", "/v1/models/group-b", key)
    assert r.status_code == 404 and "group-b`" in r.json()["error"]["message"]
    info = call(gw, "GET", "/v1/model/info", key)
    assert [d["model_name"] for d in info.json()["data"]] == ["group-a"]
    assert "127.0.0.1" not in info.text and "api_base" not in info.text
    groups = call(gw, "GET", "/v1/model_group/info", key).json()["data"]
    assert [g["model_group"] for g in groups] == ["group-a"]

    # /vllm/*: a route like any other.
    r = call(gw, "POST", "/vllm/score", key, {"model": "group-a", "text_1": "a", "text_2": "b"})
    assert r.status_code == 200 and r.json()["model"] == "served-a", r.text
    for model, status in [("group-b", 403), ("nonexistent", 404), ("flaky", 403)]:
        r = call(gw, "POST", "/vllm/score", key, {"model": model, "text_1": "a"})
        assert r.status_code == status, (model, r.text)
    r = call(gw, "POST", "/vllm/score", key, {"text_1": "a", "text_2": "b"})
    assert r.status_code == 200, "no model: its own vLLM deployment, not the config's first"
    r = call(gw, "GET", "/vllm/metrics", key)
    assert r.status_code == 200 and "vllm:" in r.text
    assert served(mock_a[1]) == [("POST", "/score", "served-a"), ("POST", "/score", None), ("GET", "/metrics", None)]

    # Master-only endpoints.
    for method, path, body in [("GET", "/health", None), ("POST", "/key/generate", {})]:
        r = call(gw, method, path, key, body)
        assert r.status_code == 403 and error_type(r) == "permission_error", (path, r.text)

    # /key/info: about itself only.
    r = call(gw, "GET", "/key/info", key)
    assert r.status_code == 200 and r.json()["info"]["models"] == ["group-a"]
    assert call(gw, "GET", f"/key/info?key={key}", key).status_code == 200
    for other, status in [(minted["other"], 403), (FLAKY_KEY, 403), (MASTER, 403),
                          ("sk-nope", 404), (minted["revoked"], 404), (EXPIRED, 404)]:
        r = call(gw, "GET", f"/key/info?key={other}", key)
        assert r.status_code == status, (other, r.text)
        assert other not in r.text
    assert served(mock_b[1]) == [], "nothing reached group-b's upstream"


def test_body_fallbacks_are_the_clients_choice_and_need_permission(keyed, mock_a, mock_b):
    gw, _ = keyed
    for key, model in [(RESTRICTED, "group-a"), (FLAKY_KEY, "flaky")]:
        for extra in [{"fallbacks": ["group-b"]}, {"fallbacks": [{model: ["group-b"]}]},
                      {"context_window_fallbacks": ["group-b"]}]:
            r = call(gw, "POST", "/v1/chat/completions", key, chat_body(model, "fallback", **extra))
            assert r.status_code == 403, (key, extra, r.text)
            assert error_type(r) == "key_model_access_denied" and "`group-b`" in r.json()["error"]["message"]
    assert served(mock_a[1]) == [] and served(mock_b[1]) == [], "refused before anything is sent"
    # The master key may name any group as a fallback.
    r = call(gw, "POST", "/v1/chat/completions", MASTER,
             chat_body("group-a", "fallback", fallbacks=["group-b"], caching=False))
    assert r.status_code == 200
    mock_a[1].take()


def test_a_keys_group_may_be_served_by_its_configured_fallback(keyed, mock_a, mock_b):
    gw, _ = keyed
    r = call(gw, "POST", "/v1/chat/completions", FLAKY_KEY, chat_body("flaky", "configured fallback"))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-model-group"] == "group-b"
    assert "b says hello" in r.json()["choices"][0]["message"]["content"]
    assert served(mock_a[1]) == [("POST", "/v1/chat/completions", "fail-500")]
    assert served(mock_b[1]) == [("POST", "/v1/chat/completions", "served-b")]
    # It still may not name group-b itself.
    r = call(gw, "POST", "/v1/chat/completions", FLAKY_KEY, chat_body("group-b", "direct"))
    assert r.status_code == 403
    assert served(mock_b[1]) == []


def test_cached_answers_are_shared_only_by_callers_with_the_same_groups(keyed, mock_a, mock_b):
    gw, minted = keyed
    body = chat_body("group-a", "cache me")

    # A key that may not use group-a gets no cached group-a answer, hit or miss.
    r = call(gw, "POST", "/v1/chat/completions", minted["other"], body)
    assert r.status_code == 403 and "x-llm-cache" not in r.headers
    r = call(gw, "POST", "/v1/chat/completions", MASTER, body)
    assert (r.status_code, r.headers["x-llm-cache"]) == (200, "miss")
    r = call(gw, "POST", "/v1/chat/completions", MASTER, body)
    assert (r.status_code, r.headers["x-llm-cache"]) == (200, "hit")
    # A key with a narrower scope does not read the master key's answer...
    r = call(gw, "POST", "/v1/chat/completions", RESTRICTED, body)
    assert (r.status_code, r.headers["x-llm-cache"]) == (200, "miss")
    # ...but another key allowed exactly the same groups does read its own scope's.
    r = call(gw, "POST", "/v1/chat/completions", minted["minted"], body)
    assert (r.status_code, r.headers["x-llm-cache"]) == (200, "hit")
    r = call(gw, "POST", "/v1/chat/completions", minted["other"], body)
    assert r.status_code == 403
    assert len(served(mock_a[1])) == 2 and served(mock_b[1]) == []


def test_the_master_key_reaches_and_sees_everything(keyed, mock_a, mock_b):
    gw, minted = keyed
    r = call(gw, "POST", "/v1/chat/completions", MASTER, chat_body("group-b", "master b"))
    assert r.status_code == 200 and r.headers["x-llm-model-group"] == "group-b"
    r = call(gw, "GET", "/v1/models", MASTER)
    assert [m["id"] for m in r.json()["data"]] == ["group-b", "group-a", "flaky"]
    info = call(gw, "GET", "/v1/model/info", MASTER).json()["data"]
    assert [d["litellm_params"]["api_base"] for d in info][:2] == [
        f"http://127.0.0.1:{mock_b[0]}/v1", f"http://127.0.0.1:{mock_a[0]}/v1"]
    r = call(gw, "GET", "/vllm/metrics", MASTER)
    assert r.status_code == 200, "the config's first vLLM deployment"
    assert served(mock_b[1]) == [("POST", "/v1/chat/completions", "served-b"), ("GET", "/metrics", None)]
    r = call(gw, "GET", "/health", MASTER)
    assert r.status_code == 200 and r.json()["healthy_count"] == 3
    mock_a[1].take(), mock_b[1].take()
    r = call(gw, "GET", f"/key/info?key={minted['minted']}", MASTER)
    assert r.status_code == 200 and r.json()["info"]["key_alias"] == "minted"
    r = call(gw, "GET", "/key/info?key=sk-nope", MASTER)
    assert r.status_code == 404
    for body in [[], {"model": ["group-a"]}, {"models": "group-a"}, {"models": ["group-a"], "blocked": True}]:
        r = call(gw, "POST", "/key/generate", MASTER, body)
        assert r.status_code == 400, (body, r.text)
        assert error_type(r) == "invalid_request_error"


def test_an_open_gateway_serves_everyone_but_shows_no_addresses(gateway_factory, mock_a, mock_b):
    a_port, b_port = mock_a[0], mock_b[0]
    gw = gateway_factory(config(a_port, b_port, keys=False, cache=False), [a_port, b_port])
    mock_a[1].take(), mock_b[1].take()
    for key in [None, "sk-anything"]:
        r = call(gw, "POST", "/v1/chat/completions", key, chat_body("group-a", "open"))
        assert r.status_code == 200, r.text
        r = call(gw, "GET", "/v1/models", key)
        assert [m["id"] for m in r.json()["data"]] == ["group-b", "group-a", "flaky"]
        info = call(gw, "GET", "/v1/model/info", key)
        assert info.status_code == 200 and "127.0.0.1" not in info.text
        assert call(gw, "GET", "/vllm/metrics", key).status_code == 200
        assert call(gw, "GET", "/health", key).status_code == 200
        r = call(gw, "POST", "/key/generate", key, {})
        assert r.status_code == 403, "nothing to sign keys with"
        assert call(gw, "GET", "/key/info", key).status_code == 400
        for path in PUBLIC:
            assert call(gw, "GET", path, key).status_code == 200
    mock_a[1].take(), mock_b[1].take()


def test_pass_through_counts_like_any_route(gateway_factory, mock_a, mock_b):
    """/vllm/* spends the key's rpm, the deployment's rpm and budget, and is named in metrics
    and the access log like an OpenAI request."""
    from test_metrics import prometheus

    a_port, b_port = mock_a[0], mock_b[0]
    cfg = config(a_port, b_port, cache=False)
    cfg["model_list"][1]["litellm_params"]["rpm"] = 3
    cfg["general_settings"]["virtual_keys"].append(
        {"key": "sk-two", "key_alias": "two-a-minute", "models": ["group-a"], "rpm_limit": 2})
    gw = gateway_factory(cfg, [a_port, b_port])
    mock_a[1].take(), mock_b[1].take()
    statuses = [call(gw, "GET", "/vllm/metrics", "sk-two").status_code for _ in range(3)]
    assert statuses == [200, 200, 429], "the key's rpm_limit holds on the pass-through"
    # group-a's deployment has rpm 3: one request of it is left this minute.
    statuses = [call(gw, "POST", "/vllm/tokenize", RESTRICTED, {"model": "group-a", "prompt": "x"}).status_code
                for _ in range(2)]
    assert statuses == [200, 429], "the deployment's rpm holds on the pass-through"
    assert len(served(mock_a[1])) == 3 and served(mock_b[1]) == []
    def records():
        return [json.loads(line.split(" llm=", 1)[1]) for line in gw.logs().splitlines()
                if " llm={" in line]

    # Access-log lines reach the file every 50 ms: wait for the three served requests.
    wait_until(lambda: len(records()) >= 3, 5, "access-log records")
    p = prometheus(gw)
    labels = 'model_group="group-a",deployment="group-a_1",key_alias="two-a-minute"'
    assert p[f'llm_gateway_requests{{{labels},status_class="2xx"}}'] == 2
    named = [{k: r[k] for k in ("model_group", "deployment", "key_alias")} for r in records()]
    assert named.count({"model_group": "group-a", "deployment": "group-a/1", "key_alias": "two-a-minute"}) == 2
    assert named.count({"model_group": "group-a", "deployment": "group-a/1", "key_alias": "restricted"}) == 1
