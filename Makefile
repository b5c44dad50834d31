# The commands a newcomer runs. Everything lives in ./.venv and ./.cache (both ignored).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER := e2e/cluster
export KUBECONFIG ?= $(CURDIR)/.cache/control-plane/run/admin.kubeconfig

.PHONY: help venv test unit e2e demo cluster cluster-build cluster-down crds clean

help:
	@echo "make demo          local cluster + operator + sample Agent/Capability/Goal, end to end"
	@echo "make test          unit tests, then e2e tests on the local cluster"
	@echo "make cluster       build (first time ~8 min) and start the local control plane"
	@echo "make cluster-down  stop it; nothing keeps running"
	@echo "make crds          regenerate crds/ from the API models"
	@echo "make bench         every benchmark into docs/performance.md: dispatch (N = $(BENCH_GOALS), and"
	@echo "                   $(BENCH_STEADY) goals/s:seconds), scale ($(BENCH_SCALE_GOALS) goals, $(BENCH_SOAK) s soak), agent loop"
	@echo "make bench-smoke   all of them small (N = 100, 40 s soak), printed only; CI runs them too"
	@echo "make bench-loop    agent loop benchmark into docs/performance.md (Agent loop, Prompt cache)"
	@echo "make bench-gateway what the model gateway adds to 100 concurrent streamed calls, into docs/performance.md"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

unit: venv
	$(BIN)/pytest tests

e2e: venv cluster-build
	$(BIN)/pytest e2e

test: venv cluster-build
	$(BIN)/pytest tests e2e

cluster-build:
	$(CLUSTER)/build.sh

cluster: cluster-build
	$(CLUSTER)/up.sh

cluster-down:
	$(CLUSTER)/down.sh

crds: venv
	$(BIN)/overseer-crds --output crds

demo: venv cluster
	$(BIN)/python -m e2e.demo

BENCH_GOALS ?= 100,1000,5000
BENCH_REPEAT ?= 3
BENCH_STEADY ?= 20:60
BENCH_ARGS ?=  # e.g. --profile (needs py-spy), --wait-quiet 600
BENCH_SCALE_GOALS ?= 10000
BENCH_SOAK ?= 3600
.PHONY: bench bench-smoke bench-loop bench-scale bench-gateway
BENCH_LOOP_ARGS ?=  # e.g. --wait-quiet 300, --no-cluster
bench: venv cluster-build
	$(BIN)/python -m e2e.bench.dispatch --goals $(BENCH_GOALS) --repeat $(BENCH_REPEAT) --steady $(BENCH_STEADY) --docs docs/performance.md $(BENCH_ARGS)
	$(BIN)/python -m e2e.bench.scale --goals $(BENCH_SCALE_GOALS) --soak $(BENCH_SOAK) --docs docs/performance.md
	$(BIN)/python -m e2e.bench.loop --docs docs/performance.md $(BENCH_LOOP_ARGS)
	$(BIN)/python -m e2e.bench.gateway --docs docs/performance.md

bench-scale: venv cluster-build
	$(BIN)/python -m e2e.bench.scale --goals $(BENCH_SCALE_GOALS) --soak $(BENCH_SOAK) --docs docs/performance.md

bench-smoke: venv cluster-build
	$(BIN)/python -m e2e.bench.dispatch --goals 100 --steady 10:5 $(BENCH_ARGS)
	$(BIN)/python -m e2e.bench.scale --goals 300 --agents 10 --slots 5 --soak 40 --churn 5
	$(BIN)/python -m e2e.bench.loop --quick $(BENCH_LOOP_ARGS)
	$(BIN)/python -m e2e.bench.gateway --requests 200 --rounds 1

bench-gateway: venv cluster-build
	$(BIN)/python -m e2e.bench.gateway --docs docs/performance.md

bench-loop: venv cluster-build
	$(BIN)/python -m e2e.bench.loop --docs docs/performance.md $(BENCH_LOOP_ARGS)

clean: cluster-down
	rm -rf .cache/control-plane/run
