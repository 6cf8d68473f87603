# Two entry points (README): `make demo` runs a small search on the bundled digits data,
# `make test` checks lint, format and types, then runs the test suite (what CI runs). Both create .venv
# on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo lint test test-fast clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) run_search.py --space batchnorm --dataset digits --num-samples 6 --max-epochs 3 --name demo-$$(date -u +%Y%m%d-%H%M%S)

# ruff (lint, format) and mypy, as configured in pyproject.toml; tests/test_imports.py checks import cycles.
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) results .pytest_cache
