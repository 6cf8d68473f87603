# Two entry points (README): `make demo` runs a small search on the bundled digits data,
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) run_search.py --space batchnorm --dataset digits --num-samples 6 --max-epochs 3 --name demo-$$(date -u +%Y%m%d-%H%M%S)

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) results .pytest_cache
