# Two commands on a fresh machine with python3 (>= 3.10) and make:
#   make test   create/update .venv, run every test (unit, chapters, book build)
#   make book   build the HTML book from the committed outputs into _build/html
# and the one that produces the committed outputs:
#   make execute PROFILE=cpu [CHAPTERS="chapters/04_math.ipynb ..."]

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
CHAPTERS ?= $(sort $(wildcard chapters/*.ipynb))
# Notebook kernels ("python3", from ipykernel) start `python` from PATH:
# put the venv first so they run the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)
# Hash of the dependency list: the venv is refreshed only when it changes.
DEPS_HASH := $(shell cat pyproject.toml environment.yml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: help venv book test unit execute clean linkcheck browser bench test-backends test-gpu

help:
	@echo "make test                      run every test (creates/updates .venv)"
	@echo "make book                      build _build/html from the committed outputs"
	@echo "make execute PROFILE=cpu       re-run chapters in place (CHAPTERS=... to pick)"
	@echo "make unit                      unit tests only (fast)"
	@echo "make test-backends             model/training/sampling tests on JAX and PyTorch too"
	@echo "make test-gpu                  every chapter in the gpu profile, metrics checked (GPU machine)"
	@echo "make browser                   build the book, then test it in headless Chromium"
	@echo "make linkcheck                 check the book's external links (skipped offline)"
	@echo "make bench                     benchmarks -> results/bench.json (appendix book/bench)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.book-$(DEPS_HASH): | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[book]"
	touch $@

$(VENV)/.test-$(DEPS_HASH): | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	touch $@ $(VENV)/.book-$(DEPS_HASH)

venv: $(VENV)/.test-$(DEPS_HASH)

book: $(VENV)/.book-$(DEPS_HASH)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "open _build/html/index.html"

# Chapters run with the smoke profile under nbval (lax; cells marked
# NBVAL_CHECK_OUTPUT are compared) and under papermill (tests/test_notebooks.py);
# the book is built by tests/test_book.py. tests/conftest.py points results/
# and caches at temporary folders, so nothing committed changes.
# pytest-xdist runs the tests on WORKERS processes (default: one per core);
# --dist loadscope keeps each notebook (and each test module) on one worker,
# which nbval needs: a notebook's cells share one kernel. WORKERS=0 runs serially.
WORKERS ?= auto
test: $(VENV)/.test-$(DEPS_HASH)
	LLMFT_PROFILE=smoke $(BIN)/python -m pytest tests chapters llmft --doctest-modules --nbval-lax -p no:cacheprovider --durations=25 -n $(WORKERS) --dist loadscope

# make test runs tests/test_backends.py on JAX; this adds PyTorch (skipped,
# with the reason, when torch is not installed: PyPI's Linux wheel is the
# CUDA build, so install a CPU build of PyTorch yourself if you want it).
test-backends: $(VENV)/.test-$(DEPS_HASH)
	LLMFT_BACKENDS=jax,torch $(BIN)/python -m pytest tests/test_backends.py -rs -p no:cacheprovider

# On a GPU machine: every chapter with the gpu profile (papermill, into
# _build/gpu-run), metrics checked against the committed cpu run; JAX backend
# where TensorFlow is not installed. See tools/gpu_run.py.
test-gpu: $(VENV)/.test-$(DEPS_HASH)
	$(BIN)/python tools/gpu_run.py --profile gpu --out _build/gpu-run

unit: $(VENV)/.test-$(DEPS_HASH)
	$(BIN)/python -m pytest tests llmft --doctest-modules -m "not notebook and not book" -p no:cacheprovider

execute: $(VENV)/.test-$(DEPS_HASH)
	$(BIN)/python tools/execute.py --profile $(PROFILE) $(CHAPTERS)

# The book in headless Chromium (tests/test_browser.py, Debian's chromium +
# Playwright from the test extra); screenshots land in _build/screenshots/.
browser: book $(VENV)/.test-$(DEPS_HASH)
	LLMFT_BOOK_HTML=_build/html $(BIN)/python -m pytest tests/test_browser.py -p no:cacheprovider

# External links need the internet: without it, say so and stop (exit 0).
# Internal links are checked by every build (-n) and by tests/test_browser.py.
LINKCHECK_PROBE := import socket; socket.create_connection(("github.com", 443), timeout=5).close()
linkcheck: $(VENV)/.book-$(DEPS_HASH)
	@if $(BIN)/python -c '$(LINKCHECK_PROBE)' 2>/dev/null; then \
		$(BIN)/jupyter-book build . --builder linkcheck; \
	else \
		echo "make linkcheck: skipped, no network (github.com:443 unreachable); external links are not checked offline"; \
	fi

# Speed and memory, as ratios measured in one run (llmft/bench.py, tools/bench.py).
bench: $(VENV)/.test-$(DEPS_HASH)
	$(BIN)/python tools/bench.py

clean:
	rm -rf _build
