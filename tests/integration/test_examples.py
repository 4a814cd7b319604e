"""The example clients (examples/): curl, the OpenAI Python SDK and the LiteLLM SDK, run
against a gateway configured like the demo (its model names), on a real Triton."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from harness import NATIVE, ROOT, Gateway, gateway_json_holder


@pytest.fixture(scope="module")
def demo_gateway(triton, mock_a):
    # The demo's own gateway config, its upstreams moved to this test's ports.
    envoy_yaml = yaml.safe_load((ROOT / "envoy" / ("envoy.native.yaml" if NATIVE else "envoy.yaml")).read_text())
    hcm = envoy_yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    holder, key = gateway_json_holder(hcm)
    text = holder[key]
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{triton.port}").replace("127.0.0.1:8001", f"127.0.0.1:{mock_a[0]}")
    gw = Gateway(json.loads(text), [triton.port, mock_a[0]])
    yield gw
    gw.stop()
    mock_a[1].take()


def run(args, gw):
    r = subprocess.run(args + [gw.url + ("/v1" if args[-1].endswith(".py") else ""), "sk-1234"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "LITELLM_LOG": "ERROR"})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_curl_example(demo_gateway):
    out = run(["bash", "examples/curl.sh"], demo_gateway)
    assert '"object":"list"' in out and "data: [DONE]" in out and "Service is ready." in out


def test_openai_sdk_example(demo_gateway):
    out = run([sys.executable, "examples/openai_sdk.py"], demo_gateway)
    assert "triton chat: prompt #" in out and "openai-compatible chat: a says hello" in out
    assert "triton embeddings: [[11.0, 1.0, 1.0, -0.5]" in out


def test_litellm_sdk_example(demo_gateway):
    out = run([sys.executable, "examples/litellm_sdk.py"], demo_gateway)
    assert "triton chat: prompt #" in out and "triton stream: prompt #" in out
    assert "openai-compatible chat:" in out and "triton embeddings: [[11.0" in out
