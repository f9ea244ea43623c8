# igr-book: two commands on a fresh machine (see README.md)
#   make book   create .venv, fetch the data, vendor MathJax, build the HTML book in _build/html
#   make test   the same set-up, then the whole test suite (what .ci/run calls)
# Everything else (make run, make wheels, make bench, make clean) is for working on the book;
# `make help` lists the targets and tests/test_docs_commands.py runs each in a cheap form.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# the interpreter that creates the venv (Python >= 3.11)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.igr-installed
# kernels and tools resolve to the venv, whatever the caller's PATH
export PATH := $(abspath $(VENV))/bin:$(PATH)

MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX := vendor/mathjax/tex-chtml.js

# The profile the chapters run at (smoke | cpu | paper); chapters read $IGR_PROFILE.
IGR_PROFILE ?= cpu
export IGR_PROFILE
TOC ?= _toc.yml
# make run: one chapter at one profile with papermill
CHAPTER ?=
PROFILE ?= $(IGR_PROFILE)
ARGS ?=
# make run: where the chapter's sweeps run (inline | process | submitit | dask; empty: inline)
# and with how many workers; the chapter's sweep.run reads them as $IGR_EXECUTOR, $IGR_WORKERS
EXECUTOR ?=
WORKERS ?=
PYTEST_ARGS ?=

# sha256sum (GNU coreutils) where it exists, else `shasum -a 256` (macOS); same output format
SHA256 := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo shasum -a 256)

.PHONY: help env data mathjax book test run wheels clean

help:
	@echo "make book    build the HTML book in _build/html (IGR_PROFILE=$(IGR_PROFILE))"
	@echo "make test    run every test (chapters at the smoke profile)"
	@echo "make run CHAPTER=mnist_igr PROFILE=paper ARGS='-p seeds 3'"
	@echo "             execute one chapter with papermill into build/runs/ (ARGS=--dry-run: check only)"
	@echo "make wheels  download CUDA JAX and every wheel the chapters need into build/wheels/"
	@echo "             for an offline GPU machine (then scripts/gpu_recipe.sh --wheels build/wheels)"
	@echo "make bench   the benchmark suite (bench/; ARGS=--quick for tiny sizes)"
	@echo "make env | data | mathjax | clean"

env: $(ENV_STAMP)

# The stamp makes `make env` a no-op until pyproject.toml or requirements.lock change.
$(ENV_STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --quiet \
		-c requirements.lock -e ".[book,test,cluster]"
	touch $@

# Idempotent: files already present and verified are kept. Copies from $IGR_DATA_MIRROR when set.
data: $(ENV_STAMP)
	$(PY) -m igrlib.io.data fetch

mathjax: $(MATHJAX)

$(MATHJAX):
	rm -rf build/mathjax && mkdir -p build/mathjax vendor
	npm pack --silent --pack-destination build/mathjax mathjax@$(MATHJAX_VERSION) >/dev/null
	echo "$(MATHJAX_SHA256)  build/mathjax/mathjax-$(MATHJAX_VERSION).tgz" | $(SHA256) --check --quiet
	tar -xzf build/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C build/mathjax
	rm -rf vendor/mathjax
	cp -r build/mathjax/package/es5 vendor/mathjax
	cp build/mathjax/package/LICENSE vendor/mathjax/LICENSE
	rm -rf build/mathjax

book: env data mathjax
	jupyter-book build -W -n --keep-going --toc $(TOC) .
	$(PY) scripts/check_figures.py $(IGR_PROFILE)
	@echo "The book is in _build/html/index.html (profile $(IGR_PROFILE))."

# pytest's status 5 (no test collected) is an error like any other, said out loud
test: env data mathjax
	$(PY) -m pytest $(PYTEST_ARGS) || { status=$$?; \
		[[ $$status -ne 5 ]] || echo "error: pytest collected no tests" >&2; exit $$status; }

run: env data
	@test -n "$(CHAPTER)" || { echo "usage: make run CHAPTER=<chapter> PROFILE=<smoke|cpu|paper> [ARGS='-p name value']" >&2; exit 2; }
	IGR_EXECUTOR=$(EXECUTOR) IGR_WORKERS=$(WORKERS) $(PY) scripts/run_chapter.py $(CHAPTER) --profile $(PROFILE) $(ARGS)

# The GPU machine itself runs scripts/gpu_recipe.sh (install, check, data, every paper chapter).
wheels: env
	PYTHON=$(PY) bash scripts/gpu_recipe.sh --download build/wheels $(ARGS)

# Keeps the execution cache (_build/.jupyter_cache) and the results store.
clean:
	jupyter-book clean .

# The benchmark suite (bench/; < 15 min on 2 cores): prints the targets table and saves
# bench/results/<machine>.json, which book/performance.md plots. Needs the bench extra (PyTorch).
# make bench ARGS=--quick: tiny sizes, to check that it runs.
.PHONY: bench
bench: env data
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --disable-pip-version-check \
		--quiet -c requirements.lock -e ".[bench]"
	$(PY) -m bench.run $(ARGS)
