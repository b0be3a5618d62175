# salesops: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh
export SALESOPS_KAFKA_BOOTSTRAP ?= 127.0.0.1:9092
export SALESOPS_REDIS_URL ?= redis://127.0.0.1:6380/0

.DEFAULT_GOAL := help
.PHONY: help install up down status demo test test-unit test-integration soak rules-test lint format bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed ## create .venv and install salesops with its dev tools

up: install ## start the local Kafka broker and Redis (no Docker)
	@bash $(STACK) up

down: ## stop the local Kafka broker and Redis
	@bash $(STACK) down

status: ## show whether the local stack is running
	@bash $(STACK) status

demo: install ## run it all: local stack + topics + worker + simulator; Ctrl-C stops everything
	@bash deploy/local/demo.sh

test: install ## install, start the stack if needed, run unit + integration + rule tests, stop what it started
	@bash deploy/local/run-tests.sh

test-unit: install ## unit tests only (no broker needed)
	$(PY) -m pytest tests/unit -q

test-integration: install ## integration + e2e tests against the running local stack (make up)
	$(PY) -m pytest tests/integration tests/e2e -q

soak: install ## crash stress against the running stack (make up): SIGKILL a replay 12 times, then compare (SOAK_KILLS, SOAK_DEALS)
	SALESOPS_CRASH_KILLS=$${SOAK_KILLS:-12} SALESOPS_CRASH_DEALS=$${SOAK_DEALS:-6000} \
		$(PY) -m pytest tests/integration/test_crash_stress.py -q -p no:cacheprovider

rules-test: ## promtool check + unit tests of the Prometheus alert rules
	@bash deploy/prometheus/test.sh

lint: install ## ruff (format check + lint) and mypy
	$(VENV)/bin/ruff format --check streams schemas agents sinks tests
	$(VENV)/bin/ruff check streams schemas agents sinks tests
	$(VENV)/bin/mypy

format: install ## apply ruff format and autofixes
	$(VENV)/bin/ruff format streams schemas agents sinks tests
	$(VENV)/bin/ruff check --fix streams schemas agents sinks tests

bench: install ## worker benchmarks against a broker of their own (~15 min; BENCH_ARGS=--quick: ~5 min)
	@bash deploy/local/run-bench.sh $(BENCH_ARGS)

clean: down ## stop the stack and remove local state (.local)
	rm -rf .local
