# The two commands a newcomer runs: `make demo` and `make test`. Each builds .venv from the
# project's own files when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-partitions soak clean

$(STAMP): pyproject.toml
	@scripts/ensure-mysql-client-headers
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mysql,postgres,test,dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/lifecycle_demo.py
	$(BIN)/python examples/worker_demo.py

test: $(STAMP)
	$(BIN)/pytest -q

# Only the folders that exist: ruff fails on a missing path (a clone has no empty folders).
LINT_PATHS := $(wildcard asynctaskmanager migrations tests examples bench)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/mypy --strict examples

# make bench BENCH_ARGS=--scale-1m adds the 1,000,000-task case (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Issue 11's partition benchmark on MariaDB: 10M tasks by default (an hour or more); never in
# CI. A shorter run: make bench-partitions PARTITION_ARGS=--rows=1000000
bench-partitions: $(STAMP)
	$(BIN)/python -m bench.partitions $(PARTITION_ARGS)

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) asynctask.db asynctask.db-wal asynctask.db-shm
