# One entry point for people and CI. Everything installs into .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-quick sim clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python samples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check logformat runtime replayer debugger

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_log
	$(BIN)/python -m benchmarks.bench_rpc
	$(BIN)/python -m benchmarks.bench_replay
	$(BIN)/python -m benchmarks.bench_debugger

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.bench_log --quick
	$(BIN)/python -m benchmarks.bench_rpc --quick
	$(BIN)/python -m benchmarks.bench_replay --quick
	$(BIN)/python -m benchmarks.bench_debugger --quick

clean:
	rm -rf $(VENV) .immortals .pytest_cache .mypy_cache .ruff_cache build *.egg-info

sim: $(STAMP)
	$(BIN)/python -m runtime.sim --seeds 2000
