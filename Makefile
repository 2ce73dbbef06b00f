# The single entry point: every target bootstraps what it needs on a fresh Debian machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install run test lint format schemas contract compose-check bench-sim bench bench-quick chaos flower-screenshot clean

help:
	@echo "make install   .venv with the project and its dev tools (every target runs it first)"
	@echo "make run       local Redis + simulator + worker + Flower, demo batch, serve until Ctrl-C"
	@echo "               (RUN_ARGS=--exit-after-demo to stop after the demo)"
	@echo "make test      the whole suite (starts its own redis-server, simulator and workers)"
	@echo "make lint      ruff + mypy"
	@echo "make schemas   regenerate schemas/*.json from the models in producer/src/callpass_producer/contracts/"
	@echo "make chaos     kill workers, restart Redis, break the API, cut links; prints the table (~16 min)"
	@echo "make bench-sim requests/s the simulator sustains on loopback"
	@echo "make bench     ours against naive workers, side by side (about 9 min; bench-results/)"
	@echo "make bench-quick  the same as a < 60 s smoke run"
	@echo "make contract  the API contract suite against CALLPASS_CONTRACT_URL (real calls!)"
	@echo "make flower-screenshot  a demo run, then Flower's tasks page in headless Chromium (docs/)"

install:
	@WITH_COMPOSE_CHECK=1 bash scripts/bootstrap.sh

run: install
	$(PY) -m worker.cli run $(RUN_ARGS)

# Three pytest processes, a file each at a time: the suite mostly waits (recoveries, calls
# ringing, partitions healing), and every file's fixtures start their own Redis, simulator and
# workers. On 2 cores three processes finish in about 6 minutes, two in about 12.
PYTEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# schemas/ is generated: tests/test_schemas.py fails when a model changed without it.
schemas: install
	$(PY) -m worker.schemas

contract: install
	@echo "WARNING: this places REAL calls to CALLPASS_CONTRACT_DN through CALLPASS_CONTRACT_URL."
	@echo "         Each call costs money and rings that phone. Ctrl-C within 5 s to stop."
	@sleep 5
	$(PY) -m pytest -m contract tests/test_contract.py --contract-real

chaos: install
	$(PY) -m chaos --size full

bench-sim: install
	$(PY) -m bench.sim_load --requests 20000 --connections 32

bench: install
	$(PY) -m bench --size full

bench-quick: install
	$(PY) -m bench --size quick

flower-screenshot: install
	$(PY) scripts/flower_screenshot.py --out docs/flower-tasks.png

compose-check: install
	docker-compose config -q && echo "docker-compose.yml is valid"

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
