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

.PHONY: help build run test test-deps bench lint fmt fmt-check fuzz-smoke clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build every crate and the fluxrig binary
	cargo build --workspace --all-targets

run: ## Run the demo: the quickstart scenario (examples/quickstart.yaml)
	cargo run -q -p fluxrig -- run examples/quickstart.yaml

# The venv is rebuilt when the requirements change.
$(VENV)/.installed: $(REQS)
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(REQS)
	touch $@

test-deps: $(VENV)/.installed ## Install the Python test peers into .venv

test: test-deps fmt-check ## Build everything and run every test
	cargo build --workspace --all-targets
ifeq ($(NEXTEST),yes)
	cargo nextest run --workspace --no-fail-fast
else
	cargo test --workspace --no-fail-fast
endif
	cargo test --workspace --doc

bench: ## Run the benchmarks (results go to docs/BENCHMARKS.md by hand)
	cargo bench -p fluxrig-bench

lint: ## Clippy with warnings as errors
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
