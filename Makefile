# kbc developer targets. Everything runs inside .venv, created on first use.
PYTHON ?= python3
# bash with pipefail: pip's output is filtered below, and its exit status must still fail the target
SHELL := bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kbc-installed
# Python caches the bytecode of what it imports (__pycache__, ignored by git) unless this variable is
# set, as it is in some CI images and shells: then every process compiles numpy, torch and
# sentence-transformers from source again (16 s to import sentence-transformers instead of 6 on a
# 2-core machine; `kbc query` 0.9 s instead of 0.6). kbc's own targets let the cache be written.
unexport PYTHONDONTWRITEBYTECODE
SAMPLE_QUESTION ?= How do I run only the tests whose names match a filter?

.PHONY: install sample test bench bench-gpu conformance clean

install: $(STAMP)

# torch first and pinned here, not in pyproject.toml (kbc installs as a library beside any torch): on
# this machine the CPU wheel is served from local disk, and an unpinned torch pulls GBs of CUDA.
# editable_mode=compat puts the clone on sys.path (a .pth line) instead of an import hook, so a script
# beside a clone folder named kbc/ still imports the package, not that folder as a namespace.
# --no-compile: Python compiles what it imports on first use; compiling all of torch up front is
# most of a minute of the first run. Ray (--engine ray) is installed by `make test` only.
# The sed drops the machine's pip-index notices ("Location ... is ignored") and a dependency's
# metadata notice, which say nothing about kbc.
PIP := $(BIN)/pip install -q --disable-pip-version-check --no-compile
PIP_QUIET := sed -u -e '/^WARNING: Location .* is ignored/d' -e "/^WARNING: .* does not provide the extra/d"
RAY_STAMP := $(VENV)/.kbc-ray-installed
# kbc imports kbpack_runtime (runtimes/python), which kbc's compat editable install leaves off sys.path:
# it is installed editable too (its dependencies are kbc's already).
$(STAMP): pyproject.toml runtimes/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 2>&1 | $(PIP_QUIET)
	$(PIP) -e '.[test]' torch==2.13.0 --config-settings editable_mode=compat 2>&1 | $(PIP_QUIET)
	$(PIP) --no-deps -e runtimes/python --config-settings editable_mode=compat 2>&1 | $(PIP_QUIET)
	touch $(STAMP)

$(RAY_STAMP): $(STAMP)
	$(PIP) -e '.[test,ray]' torch==2.13.0 --config-settings editable_mode=compat 2>&1 | $(PIP_QUIET)
	touch $(RAY_STAMP)

sample: install
	$(BIN)/kbc build sample_docs -o sample.kbpack
	$(BIN)/kbc inspect sample.kbpack --verify
	$(BIN)/kbc query sample.kbpack "$(SAMPLE_QUESTION)" -k 3

# one worker per core (pytest-xdist), a test file per worker so its module fixtures are built once,
# the files in collection order: tests/conftest.py puts the longest first (LONGEST_FIRST)
test: $(RAY_STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

bench: install
	$(BIN)/python bench/run_bench.py

# On a machine with an NVIDIA GPU: builds financebench-dev and 100k synthetic records with --device cuda
# (torch if it sees CUDA, else onnxruntime-gpu, installed when missing); without a GPU, one line and exit 2.
bench-gpu: install
	$(BIN)/python bench/gpu.py

# llama.cpp (the edge-slm app's engine) against the probes: compiles llama-cpp-python, so not in `make test`.
conformance: install
	bash bench/conformance_setup.sh .conformance
	KBC_LLAMA_PYTHON=.conformance/venv/bin/python KBC_GGUF_DIR=.conformance \
	  $(BIN)/python -m pytest -q -s -m conformance -p no:cacheprovider -o addopts="" tests/test_conformance.py

clean:
	rm -rf $(VENV) sample.kbpack .pytest_cache .conformance
