# usp — the two commands a fresh machine needs are `make demo` and `make test`.
# Everything is installed from requirements.lock (pip, hashes) and package-lock.json (npm ci).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY_BOOT ?= $(shell command -v python3.11 || command -v python3)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV    := .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/*.md))
export JAX_ENABLE_X64 := 1
# This machine's pip config lists local indexes that may not exist; hide only that warning.
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
export PYTHONHASHSEED := 0
# CI-sized notebooks and benchmarks; a reader sets USP_SIZE=full.
export USP_SIZE ?= ci

.PHONY: help setup demo test lint format export export-check pytest notebooks chapter book book-check chromium bench lock clean

help:
	@echo "make demo    - set up from the lock and run the main job on bundled data"
	@echo "make test    - set up and run every check CI runs"
	@echo "make export  - regenerate the generated modules (usp/kernels, usp/core, ...) from notebooks/*.md"
	@echo "make chapter CH=07 - re-export, execute and test one chapter (notebooks/07_*.md)"
	@echo "make book    - build the offline HTML book in _build/html"
	@echo "make bench   - run every benchmark with --quick"
	@echo "make lock    - re-pin requirements.lock from pyproject.toml"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PY_BOOT) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

lock:
	$(BIN)/uv pip compile pyproject.toml --all-extras --generate-hashes --no-header \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

demo: $(STAMP)
	$(BIN)/usp demo

lint: $(STAMP)
	$(BIN)/ruff check usp tests benchmarks tools data
	$(BIN)/ruff format --check usp tests benchmarks tools data
	$(PY) data/generate.py --check
	$(PY) tools/check_layers.py usp
	@! grep -rnE '^\s*(import|from) pickle|pickle\.(load|dump)' usp tools || { echo "pickle is not allowed"; exit 1; }

format: $(STAMP)
	$(BIN)/ruff format usp tests benchmarks tools data
	$(BIN)/ruff check --fix usp tests benchmarks tools data

export: $(STAMP)
	$(PY) tools/literate.py export

export-check: $(STAMP)
	$(PY) tools/literate.py check

# The book tools' tests run node and the browser: install them first, so that they run, not skip.
pytest: $(STAMP) $(NODE_STAMP) chromium
	$(BIN)/pytest -q -p no:cacheprovider tests

# Pair each .md with a generated .ipynb and execute it in place (nbmake --overwrite),
# so the book renders the outputs of this very run.
notebooks: $(STAMP)
	$(BIN)/jupytext --quiet --to ipynb $(NOTEBOOKS)
	$(BIN)/pytest -q -p no:cacheprovider --nbmake --nbmake-timeout=900 --overwrite notebooks/*.ipynb

# One chapter, CH=NN: re-export its modules (that notebook only: other chapters' generated files
# are left alone), execute its notebook like `notebooks` does, then run the tests of its modules
# (tests/test_<name>.py for usp_module / usp_reference_module usp.<layer>.<name>, where present).
CH_MD = $(wildcard notebooks/$(CH)_*.md)
CH_MODULES = $(if $(CH_MD),$(shell sed -n '2,/^---$$/s/^usp_\(reference_\)\{0,1\}module: *//p' $(CH_MD)))
CH_TESTS = $(sort $(wildcard $(foreach m,$(CH_MODULES),tests/test_$(lastword $(subst ., ,$(m))).py)))

chapter: $(STAMP)
	@test "$(words $(CH_MD))" = 1 || { echo "make chapter CH=NN: CH='$(CH)' matches '$(CH_MD)', not one notebooks/NN_*.md"; exit 2; }
	$(PY) tools/literate.py export --only $(CH_MD)
	$(BIN)/jupytext --quiet --to ipynb $(CH_MD)
	$(BIN)/pytest -q -p no:cacheprovider --nbmake --nbmake-timeout=900 --overwrite $(CH_MD:.md=.ipynb)
	$(if $(CH_TESTS),$(BIN)/pytest -q -p no:cacheprovider $(CH_TESTS),@echo "no tests/test_<module>.py for $(CH_MD)")

# Offline HTML book from this run's executed notebooks (see tools/build_book.py).
book: $(STAMP) $(NODE_STAMP)
	$(PY) tools/build_book.py

# A real browser opens every page of the book and follows every internal link and cross-reference
# (the target page exists, and so does the #id); the notebook chapters must also show KaTeX math,
# no raw $$ and loaded figures, the API reference pages their entries.
book-check: $(NODE_STAMP) chromium
	node book/check.mjs _build/html $$(cat _build/html/chapters.txt) --reference $$(cat _build/html/reference.txt)

chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "make chromium: install Debian's chromium (apt-get install chromium)"; exit 1; }

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

# The unit tests and the notebooks are independent and mostly single-threaded compilation:
# run them side by side on two cores, then build and check the book from the executed notebooks.
test: lint export-check
	$(MAKE) --no-print-directory -j2 pytest notebooks
	$(MAKE) --no-print-directory book book-check

clean:
	rm -rf _build notebooks/*.ipynb
