#!/usr/bin/env bash
# LiteLLM's own end-to-end proxy tests against the gateway (a manual check, not in `make test`:
# it needs LiteLLM's test files and the `litellm[proxy]` package, which `make test` does not).
#
#   tests/litellm_e2e/run.sh DIR [pytest args]
#
# DIR holds LiteLLM's test files (tests/test_keys.py, test_openai_endpoints.py, test_models.py,
# test_health.py, test_fallbacks.py with its large_text.py, tests/otel_tests/test_e2e_*.py).
# The gateway runs on :4000 with master key sk-1234 and config.yaml here: LiteLLM's
# proxy_server_config.yaml with every api_base on the mock upstream (:8001), plus the models
# test_fallbacks.py uses. Python: $LITELLM_PY (default: python3) with litellm[proxy], openai,
# aiohttp, pytest, pytest-asyncio, pytest-retry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:?usage: run.sh DIR [pytest args]}
shift
cd "$root"
make -s build cli venv
out=$(mktemp -d)
target/release/llm-gateway render "$here/config.yaml" -o "$out/envoy.yaml" 2>/dev/null
.venv/bin/python tests/integration/mock_openai.py --port 8001 > "$out/mock.log" 2>&1 &
mock=$!
"$(scripts/envoy-path.sh)" -c "$out/envoy.yaml" --concurrency 2 -l warning > "$out/envoy.log" 2>&1 &
envoy=$!
trap 'kill $envoy $mock 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf localhost:4000/health/liveliness >/dev/null && break; sleep 0.2; done
cd "$dir"
LITELLM_LOCAL_MODEL_COST_MAP=True "${LITELLM_PY:-python3}" -m pytest -p no:cacheprovider -o asyncio_mode=strict "$@"
