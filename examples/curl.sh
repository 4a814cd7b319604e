#!/usr/bin/env bash
# curl against the gateway (`make run` first). Usage: examples/curl.sh [base_url] [key]
set -euo pipefail
base=${1:-http://127.0.0.1:4000}
key=${2:-sk-1234}
auth=(-H "Authorization: Bearer $key")
set -x
curl -sf "$base/v1/models" "${auth[@]}"; echo
curl -sf "$base/v1/chat/completions" "${auth[@]}" \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'; echo
curl -sf "$base/v1/chat/completions" "${auth[@]}" \
  -d '{"model":"triton-echo","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello!"}],"max_tokens":16}'; echo
curl -sfN "$base/v1/chat/completions" "${auth[@]}" \
  -d '{"model":"triton-echo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello!"}]}'
curl -sf "$base/v1/completions" "${auth[@]}" -d '{"model":"triton-echo-infer","prompt":"Once upon a time"}'; echo
curl -sf "$base/v1/embeddings" "${auth[@]}" -d '{"model":"triton-embed","input":["hello world"]}'; echo
curl -sf "$base/vllm/metrics" "${auth[@]}"
curl -sf "$base/v1/health/ready"; echo
