# Two-command quick start: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-unit test-integration test-all lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fraud demo --workdir .fraud-demo

test: $(STAMP)
	$(BIN)/pytest -m "not slow" tests

# The tests over ~30 s (full-size simulations, long training runs); CI runs them too.
test-slow: $(STAMP)
	$(BIN)/pytest -m slow tests

test-unit: $(STAMP)
	$(BIN)/pytest -m "not slow" tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -m "integration and not slow" tests/integration

test-all: $(STAMP)
	$(BIN)/pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy fraud features ingest training scoring

bench: $(STAMP)
	$(BIN)/fraud bench scoring

clean:
	rm -rf $(VENV) .fraud-demo build *.egg-info
