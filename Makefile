# The two commands a newcomer runs: `make demo` and `make test`. Each builds .venv from the
# project's own files when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench soak clean

$(STAMP): pyproject.toml
	@scripts/ensure-mysql-client-headers
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mysql,test,dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/lifecycle_demo.py

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check asynctaskmanager migrations tests examples bench
	$(BIN)/ruff format --check asynctaskmanager migrations tests examples bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) asynctask.db asynctask.db-wal asynctask.db-shm
