"""Configs written the way LiteLLM's docs write them (tests/corpus/*.yaml), each with the verdict
and messages `llm-gateway check` must give (its `# verdict:`, `# error:`, `# warning:` header
lines); the valid ones render to an Envoy config that `envoy --mode validate` accepts. Two are
served end to end: a deployment-level `rpm` and tag routing."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from harness import NATIVE, ROOT, RUNTIME_ARGS, WASM, envoy_bin, envoy_env, free_port
from test_render import CLI, start

CORPUS = ROOT / "tests" / "corpus"
# Files only included by others.
PARTS = {"include_models.yaml"}
CONFIGS = sorted(p.name for p in CORPUS.glob("*.yaml") if p.name not in PARTS)


def expectations(path):
    verdict, errors, warnings = None, [], []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(": ")
        if key == "verdict":
            verdict = value
        elif key == "error":
            errors.append(value)
        elif key == "warning":
            warnings.append(value)
    return verdict, errors, warnings


def check(path, env=None):
    return subprocess.run([CLI, "check", path], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("name", CONFIGS)
def test_corpus_config(name, tmp_path):
    path = CORPUS / name
    verdict, errors, warnings = expectations(path)
    assert verdict in ("valid", "invalid"), f"{name} has no `# verdict:` line"
    r = check(path)
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    warning_lines = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    for e in errors:
        assert any(e in line for line in error_lines), f"{name}: no error with {e!r} in:\n{r.stderr}"
    for w in warnings:
        assert any(w in line for line in warning_lines), f"{name}: no warning with {w!r} in:\n{r.stderr}"
    # Every message points into the file the user wrote: name:line:col.
    for line in error_lines + warning_lines:
        assert ".yaml:" in line.split(": ", 2)[1], line
    if verdict == "invalid":
        assert r.returncode == 1, r.stdout + r.stderr
        assert len(error_lines) == len(errors), f"{name}: every error, each once:\n{r.stderr}"
        assert f"invalid — {len(errors)} error" in r.stderr
        return
    assert r.returncode == 0 and error_lines == [], r.stderr
    assert "valid — " in r.stdout
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([CLI, "render", path, "-o", out, "--wasm", WASM, *RUNTIME_ARGS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    v = subprocess.run([envoy_bin(), "--mode", "validate", "-c", out], env=envoy_env(), capture_output=True, text=True)
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]


def test_render_never_writes_a_secret_from_the_environment(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""
model_list:
  - model_name: m
    litellm_params: {model: openai/m, api_base: os.environ/CORPUS_BASE, api_key: os.environ/CORPUS_SECRET}
general_settings: {master_key: os.environ/CORPUS_MASTER}
""")
    env = {**os.environ, "CORPUS_BASE": "http://127.0.0.1:8001", "CORPUS_SECRET": "sk-process-secret",
           "CORPUS_MASTER": "sk-process-master"}
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([CLI, "render", cfg, "-o", out, "--wasm", WASM, *RUNTIME_ARGS], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    rendered = out.read_text()
    assert "sk-process-secret" not in rendered and "sk-process-master" not in rendered
    if not NATIVE:
        # (The native module reads Envoy's own environment: nothing to pass.)
        assert "CORPUS_SECRET" in rendered, "Envoy passes the variable to the VM (host_env_keys)"
    r = subprocess.run([CLI, "check", cfg], capture_output=True, text=True)
    assert r.returncode == 1 and "CORPUS_BASE is not set" in r.stderr


def test_summary_reads_like_english():
    r = check(CORPUS / "tag_routing.yaml")
    assert "valid — 1 model group, 3 deployments; calls 127.0.0.1:8001, 127.0.0.1:8002, 127.0.0.1:8003" in r.stdout


def serve(tmp_path, yaml_text):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml_text)
    port, admin = free_port(), free_port()
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([CLI, "render", cfg, "-o", out, "--port", str(port), "--admin-port", str(admin),
                        "--wasm", WASM, *RUNTIME_ARGS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return start(out, admin), f"http://127.0.0.1:{port}"


def chat(url, model, **extra):
    headers = {"Authorization": "Bearer sk-1234", "connection": "close", **extra.pop("headers", {})}
    return requests.post(f"{url}/v1/chat/completions", headers=headers,
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def test_deployment_level_rpm_is_enforced(tmp_path, mock_a):
    proc, url = serve(tmp_path, f"""
model_list:
  - model_name: limited
    litellm_params:
      model: openai/limited
      api_base: http://127.0.0.1:{mock_a[0]}
    rpm: 2
general_settings:
  master_key: sk-1234
""")
    try:
        mock_a[1].take()
        statuses = [chat(url, "limited").status_code for _ in range(3)]
        assert statuses == [200, 200, 429], statuses
        assert len(mock_a[1].take()) == 2
    finally:
        proc.terminate()
        proc.wait(10)


def test_tagged_requests_reach_only_their_tier(tmp_path, mock_a, mock_b):
    proc, url = serve(tmp_path, f"""
model_list:
  - model_name: gpt-4
    litellm_params: {{model: openai/free-tier, api_base: "http://127.0.0.1:{mock_a[0]}", tags: [free]}}
  - model_name: gpt-4
    litellm_params: {{model: openai/paid-tier, api_base: "http://127.0.0.1:{mock_b[0]}", tags: [paid]}}
router_settings:
  enable_tag_filtering: true
general_settings:
  master_key: sk-1234
""")
    try:
        mock_a[1].take(), mock_b[1].take()
        for _ in range(6):
            assert chat(url, "gpt-4", tags=["paid"]).status_code == 200
            assert chat(url, "gpt-4", metadata={"tags": ["paid"]}).status_code == 200
        paid = mock_b[1].take()
        assert len(paid) == 12 and mock_a[1].take() == [], "paid traffic only on the paid deployment"
        assert all("tags" not in json.loads(e["body"]) for e in paid), "`tags` is the gateway's, not sent"
        for _ in range(6):
            assert chat(url, "gpt-4", headers={"x-litellm-tags": "free"}).status_code == 200
        free = mock_a[1].take()
        assert len(free) == 6 and mock_b[1].take() == []
        assert all("x-litellm-tags" not in e["headers"] for e in free)
        r = chat(url, "gpt-4", tags=["gold"])
        assert r.status_code == 400 and "gold" in r.json()["error"]["message"]
        assert mock_a[1].take() == [] and mock_b[1].take() == []
    finally:
        proc.terminate()
        proc.wait(10)
