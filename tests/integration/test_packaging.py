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
    gateway = hcm["http_filters"][0]
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    if gateway["name"] == "envoy.filters.http.dynamic_modules":
        # The native module: loaded by name from ENVOY_DYNAMIC_MODULES_SEARCH_PATH, the JSON raw.
        typed = gateway["typed_config"]
        assert typed["dynamic_module_config"]["name"] == "llm_gateway" and typed["filter_name"] == "llm_gateway"
        carrier = typed["filter_config"]
    else:
        assert gateway["name"] == "envoy.filters.http.wasm"
        plugin = gateway["typed_config"]["config"]
        assert plugin["root_id"] == "llm_gateway" and plugin["vm_config"]["vm_id"] == "llm_gateway"
        assert plugin["allow_on_headers_stop_iteration"] is True
        assert plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
        carrier = plugin["configuration"]
    assert carrier["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["route"]["cluster_header"] == "x-llm-cluster"
    # A route with a timeout or retries says so to the filter (envoy_route_defaults), the values
    # the same; one without either has no timeout and no retries of its own.
    said = json.loads(carrier["value"]).get("general_settings", {}).get("envoy_route_defaults")
    policy = routes[0]["route"].get("retry_policy", {})
    if said:
        assert float(routes[0]["route"]["timeout"].rstrip("s")) == said["timeout_seconds"]
        assert (policy["retry_on"], policy["num_retries"]) == (said["retry_on"], said["num_retries"])
    else:
        assert routes[0]["route"]["timeout"] == "0s" and "retry_on" not in policy
    assert "x-llm-cluster" in routes[0]["request_headers_to_remove"]
    clusters = {c["name"] for c in cfg["static_resources"]["clusters"]}
    return json.loads(carrier["value"]), clusters, cfg


def test_the_native_demo_is_the_wasm_demo_on_the_other_runtime():
    wasm_json, wasm_clusters, wasm_cfg = gateway_json("envoy/envoy.yaml")
    native_json, native_clusters, native_cfg = gateway_json("envoy/envoy.native.yaml")
    assert native_json == wasm_json and native_clusters == wasm_clusters
    hcm = [c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
           for c in (wasm_cfg, native_cfg)]
    assert hcm[0]["route_config"] == hcm[1]["route_config"]
    assert "FILTER_STATE(llm_gateway:PLAIN)" in json.dumps(hcm[1]["access_log"])


@pytest.mark.parametrize("envoy_yaml", ["envoy/envoy.yaml", "envoy/envoy.native.yaml", "envoy/envoy.compose.yaml"])
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


def check_with_cli(tmp_path, gateway_config):
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(gateway_config))
    env = {"PATH": "/usr/bin:/bin", "VLLM_API_KEY": "x"}
    r = subprocess.run([ROOT / "target" / "release" / "llm-gateway", "check", path], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_istio_example(tmp_path):
    docs = list(yaml.safe_load_all((ROOT / "examples" / "kubernetes" / "istio" / "llm-gateway.yaml").read_text()))
    plugin = next(d for d in docs if d["kind"] == "WasmPlugin")
    assert plugin["spec"]["url"].startswith("oci://") and plugin["spec"]["pluginName"] == "llm_gateway"
    check_with_cli(tmp_path, plugin["spec"]["pluginConfig"])
    filters = [d for d in docs if d["kind"] == "EnvoyFilter"]
    merged = [p["patch"]["value"] for f in filters for p in f["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    assert merged[0]["typed_config"]["config"]["allow_on_headers_stop_iteration"] is True
    assert merged[0]["name"] == f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}"
    routes = [r for f in filters for p in f["spec"]["configPatches"] if p["applyTo"] == "VIRTUAL_HOST"
              for r in p["patch"]["value"]["routes"]]
    assert routes[0]["route"]["cluster_header"] == "x-llm-cluster" and routes[0]["route"]["timeout"] == "0s"
    clusters = [d["litellm_params"]["cluster"] for d in plugin["spec"]["pluginConfig"]["model_list"]]
    assert all(c.startswith("outbound|") for c in clusters)


def test_envoy_gateway_example(tmp_path):
    docs = list(yaml.safe_load_all((ROOT / "examples" / "kubernetes" / "envoy-gateway" / "llm-gateway.yaml").read_text()))
    policy = next(d for d in docs if d["kind"] == "EnvoyExtensionPolicy")
    wasm = policy["spec"]["wasm"][0]
    assert wasm["rootID"] == "llm_gateway" and wasm["code"]["type"] == "Image"
    check_with_cli(tmp_path, wasm["config"])
    patches = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")["spec"]["jsonPatches"]
    assert any(p["operation"]["path"].endswith("allow_on_headers_stop_iteration") and p["operation"]["value"] is True
               for p in patches)
    route = next(p["operation"]["value"] for p in patches
                 if "route" in p["type"].lower() and p["operation"]["path"].endswith("/routes/0"))
    assert route["route"]["cluster_header"] == "x-llm-cluster"
    http_route = next(d for d in docs if d["kind"] == "HTTPRoute")
    rules = len(http_route["spec"]["rules"])
    for d in wasm["config"]["model_list"]:
        index = int(d["litellm_params"]["cluster"].rsplit("/", 1)[1])
        assert index < rules, "each deployment names a cluster Envoy Gateway builds for the route"


def test_oci_layout(tmp_path):
    r = subprocess.run(["python3", ROOT / "scripts" / "oci.py", "9.9.9"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import hashlib
    out = ROOT / "target" / "oci"
    index = json.loads((out / "index.json").read_text())
    entry = index["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "9.9.9"
    manifest_bytes = (out / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == entry["digest"]
    layer = json.loads(manifest_bytes)["layers"][0]
    wasm = (out / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
    assert wasm.startswith(b"\0asm") and layer["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"


def test_fleet_demo_is_rendered_from_its_config_and_wired_in_compose(tmp_path):
    """The multi-gateway demo: its Envoy config and both rate-limit services' limits are what
    `render` writes for examples/fleet/config.yaml today (no drift), and compose mounts them."""
    fleet = ROOT / "examples" / "fleet"
    out = {name: tmp_path / name for name in ("envoy.yaml", "ratelimit.yaml", "limitador.yaml")}
    subprocess.run([ROOT / "target" / "release" / "llm-gateway", "render", "examples/fleet/config.yaml",
                    "-o", out["envoy.yaml"], "--wasm", "/etc/llm-gateway/llm_gateway.wasm",
                    "--ratelimit-config", out["ratelimit.yaml"], "--limitador-limits", out["limitador.yaml"]],
                   check=True, capture_output=True, cwd=ROOT)
    for name, path in out.items():
        assert path.read_text() == (fleet / name).read_text(), f"examples/fleet/{name} is stale: render it again"
    gateway, clusters, cfg = gateway_json("examples/fleet/envoy.yaml")
    assert clusters == {"mock:8001", "ratelimit:8081"}
    rls = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "ratelimit:8081")
    assert "http2_protocol_options" in json.dumps(rls)
    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    for gw in ("gateway-1", "gateway-2"):
        assert "./examples/fleet/envoy.yaml:/etc/envoy/envoy.yaml:ro" in services[gw]["volumes"]
        assert "fleet" in services[gw]["profiles"]
    assert "./examples/fleet/ratelimit.yaml:/data/ratelimit/config/config.yaml:ro" in services["ratelimit"]["volumes"]
    assert services["ratelimit"]["environment"]["REDIS_URL"] == "redis:6379"
    assert "./examples/fleet/limitador.yaml:/etc/limitador/limits.yaml:ro" in services["limitador"]["volumes"]
    # Limitador answers under the name the gateways' config calls.
    assert "ratelimit" in services["limitador"]["networks"]["default"]["aliases"]
    assert gateway["general_settings"]["rate_limit_service"]["address"] == "ratelimit:8081"
