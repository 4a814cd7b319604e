"""What cannot run here but must be right: the compose demo (no Docker engine on this machine)
and the shipped configs. Their Envoy configs are validated with the real .wasm by
scripts/validate-configs.sh; this checks the structure around them."""

import json
import shutil
import subprocess

import pytest
import yaml

from harness import ROOT


def gateway_json(envoy_yaml):
    cfg = yaml.safe_load((ROOT / envoy_yaml).read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = hcm["http_filters"][0]
    assert wasm["name"] == "envoy.filters.http.wasm"
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    plugin = wasm["typed_config"]["config"]
    assert plugin["root_id"] == "llm_gateway" and plugin["vm_config"]["vm_id"] == "llm_gateway"
    assert plugin["allow_on_headers_stop_iteration"] is True
    assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert plugin["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["route"]["cluster_header"] == "x-llm-cluster"
    assert routes[0]["route"]["timeout"] == "0s"
    assert "x-llm-cluster" in routes[0]["request_headers_to_remove"]
    clusters = {c["name"] for c in cfg["static_resources"]["clusters"]}
    return json.loads(plugin["configuration"]["value"]), clusters, cfg


@pytest.mark.parametrize("envoy_yaml", ["envoy/envoy.yaml", "envoy/envoy.compose.yaml"])
def test_every_deployment_has_its_cluster(envoy_yaml):
    gateway, clusters, cfg = gateway_json(envoy_yaml)
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for d in gateway["model_list"]:
        base = d["litellm_params"]["api_base"]
        host_port = base.split("//", 1)[1].split("/", 1)[0]
        assert d["litellm_params"].get("cluster", host_port) in clusters, base


def test_compose_demo_structure():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"envoy", "mock", "triton"} <= set(services)
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:")
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["envoy"]["volumes"]}
    assert mounts["/etc/envoy/envoy.yaml"] == "./envoy/envoy.compose.yaml"
    assert mounts["/etc/llm-gateway/llm_gateway.wasm"] == "./target/wasm32-wasip1/release/llm_gateway.wasm"
    for svc in ("mock", "triton"):
        script = next(a for a in " ".join(map(str, services[svc]["command"])).split() if a.endswith(".py"))
        assert (ROOT / "tests" / "integration" / script.rsplit("/", 1)[1]).exists(), script
    gateway, clusters, _ = gateway_json("envoy/envoy.compose.yaml")
    assert clusters == {"mock:8001", "triton:8000"}
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed: `docker-compose config` not run")
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
