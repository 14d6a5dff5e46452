# The front door. `make run` and `make test` work on a fresh clone: they install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install tools run test test-fast lint kafka kafka-stop schemas config-table openapi bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

# Debian tools the tests and benchmarks use: promtool (prometheus), nginx, kcat, chromium.
tools:
	@bash deploy/install-tools.sh

run: install
	$(BIN)/akece-webhooks demo

test: install tools
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

lint: install
	$(BIN)/ruff check services schemas tests bench examples
	$(BIN)/mypy

kafka: install
	$(BIN)/akece-webhooks kafka start

kafka-stop: install
	$(BIN)/akece-webhooks kafka stop

schemas: install
	$(PY) -m schemas.generate

openapi: install
	$(PY) -m services.admin.openapi

config-table: install
	$(PY) -m services.shared.settings README.md

bench: install tools
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
