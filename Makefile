# Build plumbing for toymodels. Everything runs inside a local .venv that is
# (re)built from pyproject.toml + requirements/lock.txt on demand.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
LOCK_VENV := .venv-lock

# Hypothesis profile registered in tests/conftest.py (ci, thorough, dev).
HYPOTHESIS_PROFILE ?= ci
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k hmm -x"`.
PYTEST_ARGS ?=
# Test processes (pytest-xdist; each test file runs whole in one, so its shared fixtures are built once).
# Two, because compiling, most of the suite's time, is single-threaded: a second process uses the
# second core of a 2-core machine. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
# Profile for scripts/reproduce.py.
PROFILE ?= quick

BENCHES := $(sort $(wildcard bench/bench_*.py))

# Optional: preload Debian's jemalloc for benchmarks if it is installed
# (apt-get install libjemalloc2); never decay dirty pages so allocator
# behaviour does not add noise to timings.
JEMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/aarch64-linux-gnu/libjemalloc.so.2))
ifneq ($(JEMALLOC),)
BENCH_ENV := LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
else
BENCH_ENV :=
endif

TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-fonts-recommended latexmk

.PHONY: help venv test test-slow test-thorough reproduce claims bench paper lock clean distclean

help:
	@echo "make test           fast tests (not slow), HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE)"
	@echo "make test-slow      only tests marked slow (training / long runs)"
	@echo "make test-thorough  fast tests with HYPOTHESIS_PROFILE=thorough"
	@echo "make reproduce      scripts/reproduce.py --profile \$$PROFILE (default quick)"
	@echo "make claims         run tests/claims and write the claims table to paper/tables/claims.{md,tex}"
	@echo "make bench          run bench/bench_*.py in sorted order"
	@echo "make paper          build paper/paper.pdf with latexmk"
	@echo "make lock           regenerate $(LOCK) from a fresh venv"
	@echo "make clean          remove caches and build outputs (distclean also removes .venv)"

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --upgrade pip
	$(VENV_PY) -m pip install -c $(LOCK) -e '.[dev]'
	touch $@

test: $(STAMP)
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VENV_PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP)
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VENV_PY) -m pytest -m slow -q $(PYTEST_ARGS)

test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(VENV_PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

reproduce: $(STAMP)
	$(VENV_PY) scripts/reproduce.py --profile $(PROFILE)

claims: $(STAMP)
	$(VENV_PY) -m theory.claims --profile $(HYPOTHESIS_PROFILE)

$(VENV)/.installed-bench: $(STAMP)
	$(VENV_PY) -m pip install -c $(LOCK) -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	@if [ -z "$(BENCHES)" ]; then echo "no bench/bench_*.py files"; fi
	@set -e; for f in $(BENCHES); do \
		echo "== $$f"; \
		$(BENCH_ENV) $(VENV_PY) $$f; \
	done

paper:
	@if [ ! -f paper/paper.tex ]; then \
		echo "paper/paper.tex does not exist yet; nothing to build."; \
		exit 0; \
	fi; \
	if ! command -v latexmk >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "latexmk not found; installing TeX Live with apt-get"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(TEX_PACKAGES); \
		else \
			echo "latexmk not found; install it with:"; \
			echo "  sudo apt-get install -y $(TEX_PACKAGES)"; \
			exit 1; \
		fi; \
	fi; \
	cd paper && latexmk -pdf -interaction=nonstopmode paper.tex

# Resolve the newest versions allowed by pyproject.toml in a throwaway venv
# and pin every installed package (runtime + dev extra) exactly.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -e '.[dev]'
	mkdir -p $(dir $(LOCK))
	{ \
		echo "# Exact pins of every package in the dev venv (runtime + [dev] extra)."; \
		echo "# The Makefile installs with: pip install -c $(LOCK) -e '.[dev]'"; \
		echo "# Regenerate with: make lock   (fresh venv, pip freeze --exclude-editable)"; \
		echo "# Generated with Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())') on $$(uname -m) Linux."; \
		$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis .ruff_cache .cache $(LOCK_VENV)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
