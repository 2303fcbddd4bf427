# Every target builds its own virtual environment from nothing (only python3 is needed), with
# the exact versions and hashes of requirements/*.txt: a fresh machine installs what CI tested.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.caltrail-run
TEST_STAMP := $(VENV)/.caltrail-test
LATEST ?= .venv-latest
LAKE ?= caltrail-lake
BENCH_ARGS ?=
# the suite on two processes (pytest-xdist; CI has 2 cores), a test file per process at a
# time so that a file's module fixtures are built once; PYTEST_ARGS= runs it in one process
PYTEST_ARGS ?= -n 2 --dist loadfile
PIP := $(BIN)/python -m pip install --quiet --no-input

.PHONY: demo test lint typecheck pytest browser bench samples lock test-latest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# what running caltrail needs, and caltrail itself (editable: the checkout is the code)
$(RUN_STAMP): $(BIN)/python requirements/run.txt pyproject.toml
	$(PIP) --require-hashes --no-deps -r requirements/run.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(RUN_STAMP)

# ... and what the tests need (pytest, pytest-xdist, hypothesis, libevtx-python, ruff, mypy)
$(TEST_STAMP): $(RUN_STAMP) requirements/test.txt
	$(PIP) --require-hashes --no-deps -r requirements/test.txt
	touch $(TEST_STAMP)

## demo: set up, then ingest and diagnose the bundled sample collection
demo: $(RUN_STAMP)
	$(BIN)/caltrail demo --samples --lake $(LAKE)

## test: set up, then lint, type-check and run the test suite (what CI runs)
test: lint typecheck pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

pytest: $(TEST_STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The report's layout test opens it in headless Chromium: installed here when this machine
# can (root, with apt-get); otherwise that test skips and says why. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }; } && \
	  echo "installed chromium for the report layout test"; } || \
	echo "chromium is not installed and cannot be here: the report layout test will skip"

## bench: measure ingest and query speed (prints a table); e.g. make bench BENCH_ARGS=--quick
bench: $(RUN_STAMP)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

## samples: regenerate caltrail/fixtures/samples (byte for byte)
samples: $(RUN_STAMP)
	$(BIN)/python -m caltrail.fixtures.make_samples

## lock: pin the newest versions pyproject.toml allows, with hashes, into requirements/*.txt
lock:
	$(PYTHON) tools/lock.py

## test-latest: the suite in a second venv with the newest releases the ranges allow, to see
## a new release break caltrail before a user does (not part of CI)
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --no-input --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --no-input --upgrade -e '.[test]'
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/mypy
	$(LATEST)/bin/pytest $(PYTEST_ARGS)
	@echo "test-latest passed with:"; cat $(LATEST)/versions.txt

clean:
	rm -rf $(VENV) $(LATEST) $(LAKE) .pytest_cache .ruff_cache .mypy_cache
