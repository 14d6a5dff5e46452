# The front door. `make run` and `make test` work on a fresh clone: they install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install tools run test test-fast faults soak lint kafka kafka-stop schemas config-table openapi bench bench-scaling clean chart-files image

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

# Tools the tests and benchmarks use: Debian's prometheus (promtool), nginx, kcat, chromium, podman, runc
# and debootstrap; Helm v4 (built with Go into build/bin) and the debootstrapped base image (build/container).
tools:
	@bash deploy/install-tools.sh

run: install
	$(BIN)/akece-webhooks demo

test: install tools
	$(BIN)/python -m pytest -q -ra

# The long fault campaign (docs/reliability.md): 20,000-delivery failover on a 3-node cluster and
# long network faults. `make test` runs the CI-sized versions; these are marked `faults`.
faults: install tools
	$(BIN)/python -m pytest -q -ra -s -m faults tests/test_failover.py tests/test_network_faults.py

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

# One knob at a time from a base point: fan-out, body size, webhooks, delivery processes, latency at
# 25/50/75% of the base rate (bench/results/scaling-<date>.*; about 10 minutes).
bench-scaling: install tools
	$(PY) -m bench.scaling

# 30 minutes at half the sustained rate, 1% of webhooks failing, its own broker SIGKILLed and started
# again in the middle: RSS, fds, asyncio tasks and consumer lag every 10 s (bench/results/soak-<date>.*).
soak: install tools
	$(PY) -m bench.soak

# The chart carries copies of the alert rules and the dashboard (Helm reads only its own folder);
# tests/test_helm_chart.py fails when they differ from the sources.
chart-files:
	cp deploy/prometheus/alerts.yml deploy/helm/akece-webhooks/files/alerts.yml
	cp deploy/grafana/dashboards/akece-webhooks.json deploy/helm/akece-webhooks/files/akece-webhooks.json

# The image, with podman (or: docker build -t akece-webhooks .).
image:
	podman build --format docker -t localhost/akece-webhooks:$$($(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])') .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
