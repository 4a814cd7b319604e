#!/usr/bin/env bash
# `envoy --mode validate` on every Envoy config the project ships (envoy/ and examples/),
# with the real .wasm (or, for envoy.native.yaml, the real dynamic module from
# target/release): the filter's configure runs, so a bad gateway config fails here.
# Configs written for containers name the wasm by its in-container path; a temporary copy
# points them at the local build instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
envoy=$(scripts/envoy-path.sh)
wasm="$root/target/wasm32-wasip1/release/llm_gateway.wasm"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0; count=0
while IFS= read -r f; do
  grep -q "static_resources" "$f" || continue
  count=$((count + 1))
  sed "s#/etc/llm-gateway/llm_gateway.wasm#$wasm#" "$f" > "$tmp/config.yaml"
  if ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$root/target/release" "$envoy" --mode validate -c "$tmp/config.yaml" -l error > "$tmp/log" 2>&1; then
    echo "valid: $f"
  else
    echo "INVALID: $f"; cat "$tmp/log"; status=1
  fi
done < <(find envoy examples -name '*.yaml' -o -name '*.yml' | sort)
echo "$count Envoy configs checked"
[ "$count" -gt 0 ] || { echo "no Envoy configs found"; exit 1; }
exit $status
