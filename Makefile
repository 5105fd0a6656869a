# One entry point for people and CI. Everything installs into .venv on first use, and each
# target installs only what it needs: the demo the runtime alone (`-e .`), lint and typecheck the
# dev tools as well (`.[dev]`), the test suite and the benchmarks the benchmarks' plotting and
# gRPC/PostgreSQL baselines too (`.[dev,bench]`: the suite runs each benchmark's quick smoke
# test). One stamp per set, so `make demo` never pays for the benchmarks' packages.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint typecheck pytest bench bench-quick sim clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@ $(RUNTIME)

$(BENCH): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev,bench]'
	touch $@ $(DEV) $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/python samples/demo.py

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check logformat runtime replayer debugger upgrade

typecheck: $(DEV)
	$(BIN)/mypy

pytest: $(BENCH)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(BENCH)
	$(BIN)/python -m benchmarks.bench_log
	$(BIN)/python -m benchmarks.bench_rpc
	$(BIN)/python -m benchmarks.bench_replay
	$(BIN)/python -m benchmarks.bench_debugger

bench-quick: $(BENCH)
	$(BIN)/python -m benchmarks.bench_log --quick
	$(BIN)/python -m benchmarks.bench_rpc --quick
	$(BIN)/python -m benchmarks.bench_replay --quick
	$(BIN)/python -m benchmarks.bench_debugger --quick

clean:
	rm -rf $(VENV) .immortals .immortals-demo .pytest_cache .mypy_cache .ruff_cache build *.egg-info

sim: $(RUNTIME)
	$(BIN)/python -m runtime.sim --seeds 2000
