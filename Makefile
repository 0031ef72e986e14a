# Two-command quick start: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov in its own environment: its pinned dependencies conflict with the project's.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
CHECKOV := checkov>=3.2,<4

.PHONY: install tools demo test test-slow test-unit test-integration test-deploy test-all lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

$(TOOLS_STAMP): Makefile
	test -d $(TOOLS) || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet '$(CHECKOV)'
	$(TOOLS)/bin/pip check
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/fraud demo --workdir .fraud-demo

test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest -m "not slow" tests

# The tests over ~30 s (full-size simulations, long training runs); CI runs them too.
test-slow: $(STAMP)
	$(BIN)/pytest -m slow tests

test-unit: $(STAMP)
	$(BIN)/pytest -m "not slow" tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -m "integration and not slow" tests/integration

test-deploy: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest tests/deploy tests/unit/test_cluster.py tests/unit/test_healthcheck.py

test-all: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy fraud features ingest training scoring

bench: $(STAMP)
	$(BIN)/fraud bench scoring

clean:
	rm -rf $(VENV) $(TOOLS) .fraud-demo build *.egg-info
