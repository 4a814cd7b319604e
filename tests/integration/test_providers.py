"""OpenAI, Azure OpenAI and the OpenAI-compatible clouds as deployments, against local
stand-ins (no test calls the internet): what each upstream receives (path, api-version, key
header), wildcard routing, and `render --drop-unsupported`."""

import json
import subprocess

import requests

from harness import wait_until

from test_render import CLI

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def post(gw, path, body, key=None):
    headers = {"connection": "close"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{gw.url}{path}", json=body, headers=headers)


def test_azure_openai_gets_what_azure_expects(gateway_factory, mock_a):
    base = f"http://127.0.0.1:{mock_a[0]}"
    cfg = {"model_list": [
        {"model_name": "gpt-4", "litellm_params": {"model": "azure/my-gpt4", "api_base": base,
                                                   "api_key": "az-secret", "api_version": "2024-06-01"}},
        {"model_name": "embed", "litellm_params": {"model": "azure/my-embed", "api_base": base + "/",
                                                   "api_key": "az-secret"}},
        {"model_name": "broken", "litellm_params": {"model": "azure/fail-400", "api_base": base, "api_key": "k"}}],
        "general_settings": {"master_key": "sk-m"}}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "gpt-4"}, "sk-m")
    assert r.status_code == 200, r.text
    r = post(gw, "/v1/embeddings", {"model": "embed", "input": "x"}, "sk-m")
    assert r.status_code == 200, r.text
    chat, embed = mock_a[1].take()
    assert chat["path"] == "/openai/deployments/my-gpt4/chat/completions?api-version=2024-06-01"
    assert chat["headers"]["api-key"] == "az-secret"
    assert "authorization" not in chat["headers"], "Azure's key header only, never the client's key"
    assert embed["path"].startswith("/openai/deployments/my-embed/embeddings?api-version=")
    # Azure's errors reach the client OpenAI-shaped, with their status.
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "broken"}, "sk-m")
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    mock_a[1].take()


def test_table_providers_use_their_paths_and_key_header(gateway_factory, mock_a):
    base = f"http://127.0.0.1:{mock_a[0]}"
    cfg = {"model_list": [
        # An explicit api_base always wins over the provider's default.
        {"model_name": "groq", "litellm_params": {"model": "groq/llama3-8b-8192", "api_base": base + "/openai/v1",
                                                  "api_key": "gsk-test"}},
        {"model_name": "ollama", "litellm_params": {"model": "ollama/llama3", "api_base": base}},
        {"model_name": "pplx", "litellm_params": {"model": "perplexity/sonar", "api_base": base, "api_key": "p"}}]}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    for model in ["groq", "ollama", "pplx"]:
        r = post(gw, "/v1/chat/completions", {**CHAT, "model": model})
        assert r.status_code == 200, r.text
    groq, ollama, pplx = mock_a[1].take()
    assert groq["path"] == "/openai/v1/chat/completions"
    assert groq["headers"]["authorization"] == "Bearer gsk-test"
    assert json.loads(groq["body"])["model"] == "llama3-8b-8192"
    assert ollama["path"] == "/v1/chat/completions" and "authorization" not in ollama["headers"]
    assert pplx["path"] == "/chat/completions", "perplexity's API has no /v1"


def test_provider_parameter_rules_reach_the_upstream_as_litellm_sends_them(gateway_factory, mock_a):
    base = f"http://127.0.0.1:{mock_a[0]}"
    cfg = {"model_list": [
        {"model_name": "mistral", "litellm_params": {"model": "mistral/mistral-large-latest", "api_base": base + "/v1"}},
        {"model_name": "mistral-lenient", "litellm_params": {"model": "mistral/mistral-small", "api_base": base,
                                                             "drop_params": True}},
        {"model_name": "fw", "litellm_params": {"model": "fireworks_ai/llama-v3p1-8b-instruct",
                                                "api_base": base + "/inference/v1",
                                                "additional_drop_params": ["internal_tag"]}}]}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    # A parameter the provider does not take: 400 naming it, nothing sent upstream.
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "mistral", "logit_bias": {"5": 1}, "top_k": 3})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "logit_bias" and "mistral does not support parameters: ['logit_bias']" in err["message"]
    assert "drop_params" in err["message"]
    assert mock_a[1].take() == []
    # With drop_params it is dropped; the provider's own parameters pass; streams get no
    # stream_options (Mistral takes none).
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "mistral-lenient", "logit_bias": {"5": 1}, "top_k": 3,
                                          "max_completion_tokens": 9})
    assert r.status_code == 200, r.text
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "mistral-lenient", "stream": True})
    assert r.status_code == 200, r.text
    sent, streamed = mock_a[1].take()
    body = json.loads(sent["body"])
    assert "logit_bias" not in body and body["top_k"] == 3
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body
    assert "stream_options" not in json.loads(streamed["body"])
    # Fireworks: its model namespace, and additional_drop_params removed.
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "fw", "internal_tag": "x"})
    assert r.status_code == 200, r.text
    (sent,) = mock_a[1].take()
    assert sent["path"] == "/inference/v1/chat/completions"
    body = json.loads(sent["body"])
    assert body["model"] == "accounts/fireworks/models/llama-v3p1-8b-instruct" and "internal_tag" not in body


def test_wildcard_groups_forward_the_requested_name(gateway_factory, mock_a, mock_b):
    cfg = {"model_list": [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/pinned", "api_base": f"http://127.0.0.1:{mock_a[0]}"}},
        {"model_name": "*", "litellm_params": {"model": "openai/*", "api_base": f"http://127.0.0.1:{mock_a[0]}"}},
        {"model_name": "groq/*", "litellm_params": {"model": "groq/*", "api_base": f"http://127.0.0.1:{mock_b[0]}/openai/v1"}}],
        "general_settings": {"master_key": "sk-m", "virtual_keys": [{"key": "sk-groq", "models": ["groq/*"]}]}}
    gw = gateway_factory(cfg, [mock_a[0], mock_b[0]])
    mock_a[1].take(), mock_b[1].take()
    for model, upstream in [("gpt-4o", "pinned"), ("o3-mini", "o3-mini"), ("anything-else", "anything-else")]:
        r = post(gw, "/v1/chat/completions", {**CHAT, "model": model}, "sk-m")
        assert r.status_code == 200, r.text
        (seen,) = mock_a[1].take()
        assert json.loads(seen["body"])["model"] == upstream
    r = post(gw, "/v1/chat/completions", {**CHAT, "model": "groq/llama3-70b"}, "sk-groq")
    assert r.status_code == 200 and r.headers["x-llm-model-group"] == "groq/*"
    (seen,) = mock_b[1].take()
    assert json.loads(seen["body"])["model"] == "llama3-70b", "the most specific pattern wins"
    assert post(gw, "/v1/chat/completions", {**CHAT, "model": "o3-mini"}, "sk-groq").status_code == 403
    ids = [m["id"] for m in requests.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer sk-m"}).json()["data"]]
    assert ids == ["gpt-4o"], "patterns are not models"
    def records():
        return [json.loads(line.split(" llm=", 1)[1]) for line in gw.logs().splitlines() if " llm={" in line]

    # Access-log lines reach the file every 50 ms: wait for the four served requests.
    wait_until(lambda: len(records()) >= 4, 5, "access-log records")
    records = records()
    assert {"model_group": "groq/*", "requested_model": "groq/llama3-70b"}.items() <= records[-1].items()


def test_render_drop_unsupported_names_what_it_dropped(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""
model_list:
  - model_name: claude
    litellm_params: {model: bedrock/anthropic.claude-v2}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: gemini
    litellm_params: {model: vertex_ai/gemini-pro}
environment_variables: {OPENAI_API_KEY: sk-x}
""")
    r = subprocess.run([CLI, "check", cfg], capture_output=True, text=True)
    assert r.returncode == 1
    assert "model_list[0].litellm_params.model: `bedrock/` is not supported: it needs AWS request signing" in r.stderr
    assert "model_list[2].litellm_params.model: `vertex_ai/` is not supported" in r.stderr, "every one in one run"
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([CLI, "render", cfg, "--drop-unsupported", "-o", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "dropped model_list[0] (`bedrock/anthropic.claude-v2` in model group `claude`)" in r.stderr
    assert "dropped model_list[2] (`vertex_ai/gemini-pro` in model group `gemini`)" in r.stderr
    rendered = out.read_text()
    assert "api.openai.com:443" in rendered and "bedrock" not in rendered
    assert "auto_san_validation" in rendered and "ca-certificates.crt" in rendered


def test_chat_on_a_text_completion_model_goes_to_completions(gateway_factory, mock_a):
    from conftest import stream_events

    cfg = {"model_list": [{"model_name": "instruct", "litellm_params": {
        "model": "text-completion-openai/gpt-3.5-turbo-instruct", "api_base": f"http://127.0.0.1:{mock_a[0]}"}}]}
    gw = gateway_factory(cfg, [mock_a[0]])
    mock_a[1].take()
    r = post(gw, "/v1/chat/completions", {"model": "instruct", "messages": [{"role": "user", "content": "Tell me"}]})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["object"] == "chat.completion" and v["model"] == "instruct"
    assert v["choices"][0]["message"] == {"role": "assistant", "content": "once upon a time"}
    assert v["usage"]["total_tokens"] == 6, "the upstream's usage"
    (seen,) = mock_a[1].take()
    sent = json.loads(seen["body"])
    assert seen["path"] == "/v1/completions" and "Tell me" in sent["prompt"] and "messages" not in sent
    resp, events = stream_events(gw.url, "/v1/chat/completions",
                                 {"model": "instruct", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    assert resp.status == 200 and events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "t0t1t2t3t4"
    mock_a[1].take()
