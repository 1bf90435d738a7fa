# Two commands: `make demo` and `make test`. Everything else is a building block.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_BASE := $(VENV)/.kiln-base
STAMP_DEV := $(VENV)/.kiln-dev

.PHONY: demo test lint bench services install install-dev clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(STAMP_BASE)

install: $(STAMP_BASE)
install-dev: $(STAMP_DEV)

demo: install
	$(VENV)/bin/kiln demo

services:
	@bash scripts/ensure-services.sh

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: install-dev services lint
	$(PY) -m pytest -q

# The serving benchmark compares with `mlflow models serve`, kept in its own environment.
MLFLOW_VENV := .venv-mlflow

$(MLFLOW_VENV)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet mlflow lightgbm

bench: install-dev $(MLFLOW_VENV)/bin/mlflow
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk >/dev/null || { echo "make: wrk is needed: apt-get install wrk"; exit 2; }
	$(PY) benchmarks/tracking.py
	$(PY) benchmarks/registry.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/serving.py --workers 2 --mlflow-python $(MLFLOW_VENV)/bin/python

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) .kiln .pytest_cache .mypy_cache .ruff_cache
