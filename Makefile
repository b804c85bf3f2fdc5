# sentient-operator — every workflow is a make target. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE  ?= $(or $(SENTIENT_CACHE),$(HOME)/.cache/sentient-operator)
VENV   := $(CACHE)/venv
PY     := $(VENV)/bin/python
export SENTIENT_CACHE := $(CACHE)
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)
export PATH := $(CACHE)/bin:$(VENV)/bin:$(PATH)

PYTEST_ARGS ?=

.PHONY: help setup setup-python lock lint typecheck unit e2e test demo crds manifests \
        cluster-up cluster-down e2e-kind bench bench-compare bench-workers clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install everything the tests and the demo need (cached under $(CACHE))
	@scripts/setup.sh

setup-python:
	@scripts/setup.sh --python

lock: ## refresh uv.lock and requirements/*.txt (hashed pins) from pyproject.toml (ARGS=--upgrade)
	@scripts/lock.sh $(ARGS)

lint: setup-python ## ruff (lint + format check), actionlint (.github/workflows)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	@$(PY) -m e2e.tools ensure actionlint >/dev/null
	$(CACHE)/bin/actionlint -no-color

typecheck: setup-python ## mypy
	$(PY) -m mypy

unit: setup-python ## unit and integration tests (no cluster)
	@scripts/pytest.sh tests $(PYTEST_ARGS)

e2e: setup ## end-to-end tests on the local control plane (or E2E_KUBECONFIG)
	@scripts/pytest.sh e2e $(PYTEST_ARGS)

test: setup lint typecheck ## the whole suite: lint, types, unit, integration, e2e, then the kind stage (docs/kind.md)
	@scripts/prebuild.sh start
	@scripts/pytest.sh tests e2e $(PYTEST_ARGS) || { rc=$$?; scripts/prebuild.sh stop; exit $$rc; }
	@KIND_STAGE=1 scripts/e2e-kind.sh

demo: setup ## local control plane + operator + an agent answering, then the status table (ARGS=--keep)
	$(PY) -m e2e.demo $(ARGS)

crds: setup ## regenerate crds/, the chart's CRDs, editor JSON Schemas, field reference and manifests/install.yaml from the models
	$(PY) -m sentient_operator.api.crdgen
	$(PY) -m e2e.render_manifests

manifests: setup ## render manifests/install.yaml from the Helm chart
	$(PY) -m e2e.render_manifests

cluster-up: setup ## start the local control plane in the background; prints the KUBECONFIG
	$(PY) -m e2e.cluster up

cluster-down: ## stop the local control plane started by cluster-up
	$(PY) -m e2e.cluster down

e2e-kind: ## kind tests with real pods: builds every image here (offline too), creates a kind cluster, helm-installs the chart (docs/kind.md)
	@scripts/e2e-kind.sh $(PYTEST_ARGS)

bench: setup ## run the benchmarks under bench/ and print their figures
	$(PY) bench/runtime.py
	$(PY) bench/runtime.py --guardrails
	$(PY) bench/ratelimit.py
	$(PY) bench/guardrails.py

bench-compare: setup-python ## runtime vs LiteLLM proxy vs direct upstream, side by side (< 30 min); writes docs/benchmarks.md (ARGS=--quick)
	$(PY) bench/compare/run.py $(ARGS)

bench-workers: setup-python ## the runtime with 1 and 2 worker processes (server.workers) under the same load (ARGS=--workers 1 2 4)
	$(PY) bench/compare/workers.py $(ARGS)

clean: ## remove build output in the checkout (the cache stays)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build *.egg-info
