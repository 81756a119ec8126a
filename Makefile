# fluxrig — the two commands users need are `make run` (the demo) and
# `make test` (builds everything, runs every test).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        ?= .venv
PYTHON      ?= python3
VENV_PY     := $(VENV)/bin/python
REQS        := tests/python/requirements.txt
# nextest when installed, cargo test otherwise.
NEXTEST     := $(shell cargo nextest --version >/dev/null 2>&1 && echo yes)

export FLUXRIG_PYTHON := $(abspath $(VENV_PY))

# DuckDB for `fluxrig audit query`: the official prebuilt library from npm,
# cached outside the checkout (docs/adr/0002-duckdb-prebuilt.md). The crate
# `duckdb = "=1.10506.1"` in Cargo.toml pairs with this version: bump both.
DUCKDB_VERSION := 1.5.6
DUCKDB_NPM     := @duckdb/node-bindings-linux-x64@$(DUCKDB_VERSION)-r.1
DUCKDB_SHA256  := 1b9f82478539bb9a1d1df44bd103121a12ae52142c07158dc52b97d2ec1d69ff
DUCKDB_LIB_DIR ?= $(HOME)/.cache/fluxrig/duckdb-$(DUCKDB_VERSION)
override DUCKDB_LIB_DIR := $(abspath $(DUCKDB_LIB_DIR))
export DUCKDB_LIB_DIR

.PHONY: help build run quickstart test test-deps deps-duckdb bench lint fmt fmt-check fuzz-smoke clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: deps-duckdb ## Build every crate and the fluxrig binary
	cargo build --workspace --all-targets

run: deps-duckdb ## Run the demo: the payment switch with two issuers under load for 30 s
	cargo run -q -p fluxrig -- demo

quickstart: deps-duckdb ## Run the quickstart scenario (examples/quickstart.yaml)
	cargo run -q -p fluxrig -- run examples/quickstart.yaml

# The venv is rebuilt when the requirements change.
$(VENV)/.installed: $(REQS)
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(REQS)
	touch $@

test-deps: $(VENV)/.installed ## Install the Python test peers into .venv

deps-duckdb: $(DUCKDB_LIB_DIR)/libduckdb.so ## Fetch the prebuilt DuckDB library (npm) into ~/.cache

$(DUCKDB_LIB_DIR)/libduckdb.so:
	@[ "$$(uname -sm)" = "Linux x86_64" ] || { echo "deps-duckdb: only x86-64 Linux is wired (docs/adr/0002-duckdb-prebuilt.md); build with --no-default-features" >&2; exit 1; }
	mkdir -p $(DUCKDB_LIB_DIR)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	npm pack --silent $(DUCKDB_NPM) >/dev/null && \
	echo "$(DUCKDB_SHA256)  $$(ls *.tgz)" | sha256sum --check --quiet && \
	tar -xzf *.tgz package/libduckdb.so package/LICENSE && \
	cp package/LICENSE $(DUCKDB_LIB_DIR)/LICENSE && \
	cp package/libduckdb.so $(DUCKDB_LIB_DIR)/libduckdb.so.tmp && \
	mv $(DUCKDB_LIB_DIR)/libduckdb.so.tmp $@

test: test-deps deps-duckdb fmt-check ## Build everything and run every test
	cargo build --workspace --all-targets
ifeq ($(NEXTEST),yes)
	cargo nextest run --workspace --no-fail-fast
else
	cargo test --workspace --no-fail-fast
endif
	cargo test --workspace --doc

bench: ## Run the benchmarks (results go to docs/BENCHMARKS.md by hand)
	cargo bench -p fluxrig-bench

lint: deps-duckdb ## Clippy with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

# Each target starts from its committed seeds (fuzz/seeds/<target>) and
# grows its corpus in fuzz/corpus/<target> (not committed).
fuzz-smoke: ## Run each fuzz target for a minute (needs cargo-fuzz)
	cd fuzz && for t in $$(cargo fuzz list); do \
		mkdir -p corpus/$$t seeds/$$t; \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=60 || exit 1; \
	done

clean:
	cargo clean
	rm -rf $(VENV)
