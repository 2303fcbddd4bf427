# Every target builds its own virtual environment from nothing (only python3 is needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.caltrail-installed
LAKE ?= caltrail-lake
BENCH_ARGS ?=

.PHONY: demo test lint typecheck pytest bench samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: set up, then ingest and diagnose the bundled sample collection
demo: $(STAMP)
	$(BIN)/caltrail demo --samples --lake $(LAKE)

## test: set up, then lint, type-check and run the test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## bench: measure ingest and query speed (prints a table); e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m pipeline.bench $(BENCH_ARGS)

## samples: regenerate fixtures/samples (byte for byte)
samples: $(STAMP)
	$(BIN)/python -m fixtures.make_samples

clean:
	rm -rf $(VENV) $(LAKE) .pytest_cache .ruff_cache .mypy_cache
