"""`llm-gateway render` and `check`: a LiteLLM config.yaml in, a running Envoy out; and live
reload through ECDS (render --reloadable) under load."""

import json
import subprocess
import threading
import time

import requests
import yaml

from harness import ROOT, RUNTIME_ARGS, WASM, envoy_bin, envoy_env, free_port, prometheus_lines, wait_until

CLI = ROOT / "target" / "release" / "llm-gateway"


def litellm_yaml(mock_port, extra_model=None):
    models = [{"model_name": "gpt-3.5-turbo", "litellm_params": {
        "model": "hosted_vllm/facebook/opt-125m", "api_base": f"http://127.0.0.1:{mock_port}/v1",
        "api_key": "os.environ/VLLM_KEY", "rpm": 600}},
        # The mock answers `slow` after 3 s: a request that is in flight across a reload.
        {"model_name": "slow", "litellm_params": {"model": "openai/slow", "api_base": f"http://127.0.0.1:{mock_port}"}}]
    if extra_model:
        models.append({"model_name": extra_model, "litellm_params": {
            "model": "openai/other", "api_base": f"http://127.0.0.1:{mock_port}"}})
    return yaml.safe_dump({"model_list": models, "litellm_settings": {"drop_params": True, "set_verbose": True},
                           "general_settings": {"master_key": "sk-1234"},
                           "environment_variables": {"VLLM_KEY": "from-the-config"}})


def start(config_path, admin_port):
    log = open(str(config_path) + ".log", "w")
    proc = subprocess.Popen([envoy_bin(), "-c", str(config_path), "--concurrency", "2", "-l", "warning",
                             "--base-id", str(admin_port), "--disable-hot-restart"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=envoy_env())
    wait_until(lambda: proc.poll() is None and requests.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).ok, 20, "envoy")
    return proc


def test_check_names_the_path_and_render_runs(tmp_path, mock_a):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(litellm_yaml(mock_a[0]))
    r = subprocess.run([CLI, "check", cfg], capture_output=True, text=True)
    assert r.returncode == 0 and "valid" in r.stdout
    assert "litellm_settings.set_verbose: ignored: LiteLLM's logging" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(litellm_yaml(mock_a[0]).replace("hosted_vllm/", "bedrock/"))
    r = subprocess.run([CLI, "check", bad], capture_output=True, text=True)
    assert r.returncode == 1 and "model_list[0].litellm_params.model" in r.stderr

    port, admin = free_port(), free_port()
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([CLI, "render", cfg, "-o", out, "--port", str(port), "--admin-port", str(admin), "--wasm", WASM, *RUNTIME_ARGS],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert subprocess.run([envoy_bin(), "--mode", "validate", "-c", out], env=envoy_env(), capture_output=True).returncode == 0
    proc = start(out, admin)
    try:
        mock_a[1].take()
        r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          json={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"Authorization": "Bearer sk-1234"})
        assert r.status_code == 200, r.text
        (seen,) = mock_a[1].take()
        assert seen["headers"]["authorization"] == "Bearer from-the-config"
        prom = "\n".join(prometheus_lines(requests.get(f"http://127.0.0.1:{admin}/stats/prometheus").text))
        assert 'llm_gateway_requests{model_group="gpt-3_5-turbo"' in prom
    finally:
        proc.terminate()
        proc.wait(10)


def test_live_reload_under_load(tmp_path, mock_a):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(litellm_yaml(mock_a[0]))
    port, admin = free_port(), free_port()
    out, ecds = tmp_path / "envoy.yaml", tmp_path / "gateway-ecds.yaml"
    render = [CLI, "render", cfg, "-o", out, "--port", str(port), "--admin-port", str(admin), "--wasm", WASM,
              "--reloadable", ecds, *RUNTIME_ARGS]
    assert subprocess.run(render, capture_output=True).returncode == 0
    proc = start(out, admin)
    stop, statuses = threading.Event(), []

    def load():
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                             json={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]},
                             headers={"Authorization": "Bearer sk-1234"})
            statuses.append(r.status_code)

    def models():
        return [m["id"] for m in requests.get(f"http://127.0.0.1:{port}/v1/models",
                                              headers={"Authorization": "Bearer sk-1234"}).json()["data"]]

    in_flight = {}

    def slow():
        # Sent under the first config, answered under the second: the filter that began the
        # request keeps the config it began with (wasm: its VM's; native: the module's Arc).
        in_flight["response"] = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "slow", "messages": [
                {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer sk-1234"}, timeout=30)

    try:
        wait_until(lambda: models() == ["gpt-3.5-turbo", "slow"], 10, "first config")
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        slow_thread = threading.Thread(target=slow)
        slow_thread.start()
        time.sleep(1)
        # Edit the config and render again: the ECDS file is replaced by an atomic rename.
        cfg.write_text(litellm_yaml(mock_a[0], extra_model="brand-new"))
        assert subprocess.run(render, capture_output=True).returncode == 0
        wait_until(lambda: "brand-new" in models(), 15, "reloaded config")
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        assert statuses and all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
        slow_thread.join(30)
        answer = in_flight["response"]
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-llm-model-group"] == "slow"
        assert answer.json()["choices"][0]["message"]["content"]
        assert requests.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                             json={"model": "brand-new", "messages": [{"role": "user", "content": "x"}]},
                             headers={"Authorization": "Bearer sk-1234"}).status_code == 200
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)
        mock_a[1].take()
