# Two entry points (README): `make demo` runs a small search on the bundled digits data,
# `make test` checks lint, format and types, then runs the test suite (what CI runs). Both create .venv
# on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo lint test test-fast clean

# The demo needs the package alone; the tests and benchmarks their extras (linters, moto, tf-keras) too.
$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.installed-base
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# A question answered with seed-paired intervals: where BatchNorm belongs on BaseNet (none, before or
# after its ReLUs), each cell with 3 seeds, on the bundled digits; a few minutes on 2 CPU cores.
demo: $(VENV)/.installed-base
	$(PY) run_search.py --space batchnorm --search grid --cells model=basenet --repeats 3 --scheduler fifo \
		--dataset digits --max-epochs 4 --name demo-$$(date -u +%Y%m%d-%H%M%S)

# ruff (lint, format) and mypy, as configured in pyproject.toml; tests/test_imports.py checks import cycles.
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Two test files at a time (pytest-xdist, a file's tests in one worker, so its module fixtures start once): the
# suite mostly waits on the searches it starts (11 CPU-minutes in 27 minutes, one file at a time, on 2 cores).
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) results .pytest_cache
