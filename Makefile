# Two commands on a fresh machine: `make demo` (set up + full pipeline on the built-in sample data) and `make test`.
SHELL      := /bin/bash
PYTHON     ?= $(shell command -v python3.11 || command -v python3)
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev,dist
PRESET     ?= tiny
WORKDIR    ?= work
PYTEST_ARGS ?=
CHROMIUM   ?= /usr/bin/chromium
POSTGRES   ?= /usr/lib/postgresql
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-fast status clean bench llama

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Torch first, from TORCH_SPEC (a CPU build here; GPU users set e.g. TORCH_SPEC=torch==2.9.1), then the project.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/factory samples --preset $(PRESET) --workdir $(WORKDIR)
	time $(BIN)/factory run all --preset $(PRESET) --workdir $(WORKDIR)
	@echo
	@echo "Next: '$(BIN)/factory status --workdir $(WORKDIR)', '$(BIN)/factory chat --workdir $(WORKDIR)', '$(BIN)/factory export --format hf --out exported --workdir $(WORKDIR)'; the README shows both UIs."

# datatrove (the preprocess baseline, and the blocks the parity test runs ours against) comes with the `bench` extra.
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

# llama.cpp's Python binding, for running exported GGUF files (tests/model/test_gguf_export.py, bench/gguf.py): pip
# builds it from source with cmake and g++ (~3.5 min on 2 cores), once per virtual environment.
CMAKE ?= /usr/bin/cmake
$(CMAKE):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq cmake g++

$(VENV)/.llama: $(VENV)/.installed | $(CMAKE)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e ".[llama]"
	touch $@

llama: $(VENV)/.llama

# The benchmarks (each prints `ratio: X.XX` last).
bench: setup $(VENV)/.bench $(VENV)/.llama
	$(BIN)/python bench/train.py
	$(BIN)/python bench/tokenize.py
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/gguf.py

# The UI tests drive Debian's Chromium with Playwright (Playwright's own browser download needs the internet).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# The request store's tests run on a real PostgreSQL too (tests/pg.py starts a throwaway server from Debian's binaries).
$(POSTGRES):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql

test: setup $(VENV)/.bench $(VENV)/.llama $(CHROMIUM) $(POSTGRES)
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e" $(PYTEST_ARGS)

status: setup
	$(BIN)/factory status --preset $(PRESET) --workdir $(WORKDIR)

clean:
	rm -rf $(WORKDIR)
