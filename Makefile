# kbc developer targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kbc-installed
SAMPLE_QUESTION ?= How do I run only the tests whose names match a filter?

.PHONY: install sample test bench conformance clean

install: $(STAMP)

# torch first and pinned: it is the CPU wheel served from local disk; an unpinned torch pulls GBs of CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]' torch==2.13.0
	touch $(STAMP)

sample: install
	$(BIN)/kbc build sample_docs -o sample.kbpack
	$(BIN)/kbc inspect sample.kbpack --verify
	$(BIN)/kbc query sample.kbpack "$(SAMPLE_QUESTION)" -k 3

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_bench.py

conformance: install
	$(BIN)/python -m pytest -q -m conformance -p no:cacheprovider -o addopts=""

clean:
	rm -rf $(VENV) sample.kbpack .pytest_cache
