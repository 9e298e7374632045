# alorws developer commands. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint format bench live clean

# The compiled reader is built by the install (hatch_build.py): a changed .pyx reinstalls.
$(STAMP): pyproject.toml hatch_build.py src/alorws/client/_speedups.pyx
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m alorws demo

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

# Two workers: most of the suite waits on loopback sockets and subprocesses, so two processes
# finish it in about 4 minutes instead of 6.5 on two cores; PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

# A read-only tour of ALOR's test environment that checks every message decodes; needs
# ALOR_REFRESH_TOKEN (never printed). Exit 0: all decoded, 1: some did not, 2: no connection.
# More options: make live LIVE_ARGS="--seconds 40 --save live-check"
LIVE_ARGS ?=
live: setup
	$(BIN)/python -m alorws check --env dev $(LIVE_ARGS)

bench: setup
	@for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
	rm -f src/alorws/client/_speedups.c src/alorws/client/_speedups.*.so
