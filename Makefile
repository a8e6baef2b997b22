# torghut-streams — two commands matter: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=

.PHONY: help install run test test-kafka-compat chaos lint typecheck alerts stack-up stack-down stack-status docs bench bench-quick clean

help:
	@echo "make run           set up everything, start the local stack and run the worker (Ctrl-C stops all)"
	@echo "make test          set up everything, start the stack, run ruff, mypy and pytest, stop the stack"
	@echo "make test ARGS='-k name'   pass arguments to pytest"
	@echo "make test-kafka-compat  the integration suite on the other Kafka version (KAFKA_COMPAT_VERSION)"
	@echo "make chaos         the failure scenarios (rebalances under load) on their own stack"
	@echo "make stack-up | stack-down | stack-status   drive the local stack alone"
	@echo "make alerts        promtool: check and unit-test the alert rules (deploy/alerts-tests)"
	@echo "make bench | bench-quick   benchmarks (not part of make test)"

# Python packages come only from pyproject.toml (pinned). Re-installs when it changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

stack-up: install
	$(PY) stack/stack.py up

stack-down:
	@if [ -x $(PY) ]; then $(PY) stack/stack.py down; else python3 stack/stack.py down; fi

stack-status:
	@if [ -x $(PY) ]; then $(PY) stack/stack.py status; else python3 stack/stack.py status; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# promtool (Debian `prometheus`, installed when missing) checks and unit-tests the alert rules.
alerts: install
	$(PY) stack/tools.py ensure prometheus >/dev/null
	promtool check rules deploy/torghut-alerts.yml
	promtool test rules deploy/alerts-tests/*.yml

run: install
	bash stack/run.sh

test: install
	bash stack/test.sh $(ARGS)

# The other broker version: the default is 3.9.1 (stack/stack.py); production clusters run 4.x.
KAFKA_COMPAT_VERSION ?= 4.4.0

# Failure scenarios (tests marked `chaos`: Kafka/Postgres outages, partitions moving between
# worker processes under load): slower and sensitive to the machine's load, so on their own
# stack and not part of `make test`. README "Chaos suite" lists them.
chaos: install
	TORGHUT_STACK_DIR=$(CURDIR)/.cache/chaos-stack bash stack/test.sh -m chaos -s $(ARGS)

test-kafka-compat: install
	TORGHUT_KAFKA_VERSION=$(KAFKA_COMPAT_VERSION) \
	TORGHUT_STACK_DIR=$(CURDIR)/.cache/test-stack-kafka-compat \
	bash stack/test.sh tests/integration tests/simulator $(ARGS)

docs: install
	$(PY) -m streams.docs --write README.md
	$(PY) deploy/k8s/sync_rules.py

bench: install
	bash stack/bench.sh full

bench-quick: install
	bash stack/bench.sh quick

clean: stack-down
	rm -rf .data .cache/stack
