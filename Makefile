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

# Every tier: lint, pytest (unit and integration), then the whole cluster
# (molecule/default: converge from bare nodes, idempotence, check, verify, then
# the fault suite on the same cluster) and the infrastructure roles alone with
# the MariaDB metastore (molecule/infra), on the local node image.
# scripts/molecule-test.sh keeps each scenario's log and ends a failure with a digest.
MOLECULE_TEST := MOLECULE_NODE_IMAGE="$$(cat $(BUILD)/node-image)" bash scripts/molecule-test.sh
# site.yml runs under Mitogen's strategy in the scenarios (.config/molecule/)
# and in the demo; ANSIBLE_STRATEGY=linear switches it off.
MITOGEN := ANSIBLE_STRATEGY_PLUGINS=$(CURDIR)/molecule/shared/strategy \
	ANSIBLE_STRATEGY=$${ANSIBLE_STRATEGY:-mitogen_linear} ANSIBLE_DEPRECATION_WARNINGS=false

test: setup lint wheelhouse
	$(BIN)/pytest tests
	$(MOLECULE_TEST) default
	$(MOLECULE_TEST) infra

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

# Molecule scenario wall times per step (not a test): writes bench/results/molecule.json.
.PHONY: bench-molecule
bench-molecule: setup wheelhouse
	MOLECULE_NODE_IMAGE="$$(cat $(BUILD)/node-image)" $(BIN)/python bench/molecule.py $(BENCH_ARGS)

# Any one host lost, per fault (not a test): writes bench/results/ha.json.
.PHONY: bench-ha
bench-ha: setup wheelhouse
	MOLECULE_NODE_IMAGE="$$(cat $(BUILD)/node-image)" $(BIN)/python bench/ha.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The infrastructure roles (PostgreSQL, MariaDB, ZooKeeper, RabbitMQ, HAProxy) on three node containers.
.PHONY: test-molecule-infra
test-molecule-infra: setup
	$(MOLECULE_TEST) infra

# --- Provisioning: wheelhouses for offline nodes, the default Molecule scenario, the demo ---
.PHONY: wheelhouse test-molecule demo demo-down
DEMO_SECRETS := $(BUILD)/demo/secrets.yml

# Wheels for the nodes, cached under .build (each rebuilt only when its inputs change).
wheelhouse: $(VENV)/.stamp
	@bash scripts/airflow-wheelhouse.sh
	@bash scripts/controller-wheelhouse.sh

# The whole cluster (site.yml) on five containers: converge, idempotence, check,
# verify, then any one host lost in turn (masters, PostgreSQL primary, ZooKeeper
# leader, RabbitMQ node, worker, a node cut off): never two schedulers, no
# duplicate task, nothing committed lost.
test-molecule: setup wheelhouse
	$(MOLECULE_TEST) default

# A local cluster, every host expendable: containers labelled ha-toolkit.demo=1,
# the API on the virtual IP, served on 127.0.0.1:8080 by the gateway demo-gw.
demo: setup wheelhouse $(DEMO_SECRETS)
	@grep -q '^patroni_airflow_password:' $(DEMO_SECRETS) || { \
		echo "$(DEMO_SECRETS) predates Patroni: run 'make demo-down' first"; exit 1; }
	$(BIN)/ansible-playbook -i inventory/demo/hosts.yml inventory/demo/containers.yml \
		-e demo_image="$$(cat $(BUILD)/node-image)"
	$(MITOGEN) ANSIBLE_PIPELINING=true $(BIN)/ansible-playbook -i inventory/demo/hosts.yml \
		-e @$(DEMO_SECRETS) playbooks/site.yml
	@echo "waiting for the API to report a healthy scheduler (up to 5 minutes)..."
	@for i in $$(seq 100); do $(PYTHON) -c 'import json, urllib.request as r; raise SystemExit( \
		json.load(r.urlopen("http://127.0.0.1:8080/api/v2/monitor/health", timeout=3)) \
		["scheduler"]["status"] != "healthy")' 2>/dev/null && break; sleep 3; done
	@echo
	@echo "Airflow:  http://127.0.0.1:8080"
	@echo "login:    admin / $$(sed -n 's/^airflow_admin_password: "\(.*\)"$$/\1/p' $(DEMO_SECRETS))"
	@echo "status:   docker exec demo-m1 sudo -u ha-toolkit /opt/ha-toolkit/bin/ha-toolkit status"
	@echo "probe:    unpause the ha_probe DAG in the UI; runs land in PostgreSQL's ha_probe_runs (the primary, via the VIP)"
	@echo "VIP:      $$(sed -n 's/^site_virtual_ip: //p' inventory/demo/group_vars/all.yml) (demo-gw forwards 127.0.0.1:8080 to it)"
	@echo
	@docker exec demo-m1 sudo -u ha-toolkit env HOME=/var/lib/ha-toolkit-controller \
		/opt/ha-toolkit/bin/ha-toolkit --config /etc/ha-toolkit/controller.yml status
	@echo "remove it all: make demo-down"

# Fresh random secrets for the demo, made once (0600).
$(DEMO_SECRETS):
	@mkdir -p $(@D)
	@umask 077 && $(PYTHON) -c 'import base64, json, os, secrets; \
	t = lambda: secrets.token_hex(16); \
	print("\n".join(f"{k}: {json.dumps(v)}" for k, v in { \
	  "patroni_superuser_password": t(), "patroni_replication_password": t(), \
	  "patroni_airflow_password": t(), \
	  "rabbitmq_erlang_cookie": secrets.token_hex(24), "rabbitmq_airflow_password": t(), \
	  "haproxy_stats_password": t(), "airflow_jwt_secret": t(), "airflow_api_secret_key": t(), \
	  "airflow_fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(), \
	  "airflow_admin_password": t()}.items()))' > $@

demo-down:
	-docker ps -aq --filter label=ha-toolkit.demo=1 | xargs -r docker rm -f -v
	-docker network ls -q --filter label=ha-toolkit.demo=1 | xargs -r docker network rm
	rm -rf $(BUILD)/demo
