# ha-toolkit: one command sets up and tests everything (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUILD := .build
export ANSIBLE_HOME := $(CURDIR)/$(BUILD)/ansible
export ANSIBLE_LOCAL_TEMP := $(CURDIR)/$(BUILD)/ansible/tmp
export BUILD_DIR := $(CURDIR)/$(BUILD)
# Tools from the venv first (ansible-lint checks that its own bin dir is on PATH).
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: test test-unit test-integration lint setup apt docker image clean bench

test: setup lint
	$(BIN)/pytest tests

test-unit: $(VENV)/.stamp
	$(BIN)/pytest -m unit tests

test-integration: setup
	$(BIN)/pytest -m integration tests

setup: apt $(VENV)/.stamp docker image

apt:
	@bash scripts/ensure-apt.sh

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

docker:
	@bash scripts/ensure-docker.sh

# Built only when the recipe under images/node changes (the tag is its hash).
image: docker
	@mkdir -p $(BUILD)
	@bash images/node/build.sh > $(BUILD)/node-image

lint: $(VENV)/.stamp
	$(BIN)/ruff check ha_toolkit tests bench
	$(BIN)/ruff format --check ha_toolkit tests bench
	$(BIN)/mypy ha_toolkit
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production

# Failover timings and controller cost (not a test): writes bench/results/failover.json.
bench: setup
	$(BIN)/python bench/failover.py

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The infrastructure roles (PostgreSQL, MariaDB, ZooKeeper, RabbitMQ, HAProxy) on three node containers.
.PHONY: test-molecule-infra
test-molecule-infra: setup
	MOLECULE_NODE_IMAGE="$$(cat $(BUILD)/node-image)" $(BIN)/molecule test -s infra
