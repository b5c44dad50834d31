# The commands a newcomer runs. Everything lives in ./.venv and ./.cache (both ignored).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER := e2e/cluster
HELM := .cache/tools/bin/helm
export KUBECONFIG ?= $(CURDIR)/.cache/control-plane/run/admin.kubeconfig

.PHONY: help venv lint prerequisites test test-full unit e2e fuzz chaos chaos-smoke demo cluster cluster-build cluster-down crds chart-crds manifests helm-build clean tools-build

help:
	@echo "make demo          local cluster + operator + sample Agent/Capability/Goal, end to end"
	@echo "make test          unit tests, then e2e tests on the local cluster (what CI runs)"
	@echo "make test-full     make test and the tests marked slow (the benchmarks' smoke runs)"
	@echo "make lint          ruff, mypy and the import contracts (pyproject.toml); CI runs it before the tests"
	@echo "make cluster       build (first time ~8 min) and start the local control plane"
	@echo "make cluster-down  stop it; nothing keeps running"
	@echo "make fuzz          e2e/test_fuzz.py at length: generated and broken Agents, Goals, Capabilities ($(FUZZ_EXAMPLES) per kind dry-run; $(FUZZ_BATCHES) batches of $(FUZZ_LIVE_EXAMPLES) per kind stored with the operator running)"
	@echo "make chaos         the fault table at full size (python -m e2e.chaos --full) into docs/reliability.md"
	@echo "make chaos-smoke   every fault scenario reduced (a few minutes), printed only"
	@echo "make crds          regenerate crds/ from the API models"
	@echo "make install-check operator/install-wheel.sh (what the images run) into a clean folder; both commands from it"
	@echo "make images        build $(OPERATOR_IMAGE):$(IMAGE_TAG) and $(AGENT_IMAGE):$(IMAGE_TAG) (docker, podman or buildah)"
	@echo "make chart-crds    regenerate the chart's CRD templates (charts/overseer/templates/crds) from the models"
	@echo "make manifests     regenerate manifests/ (kustomize) from the chart (helm template)"
	@echo "make helm-build    build the real Helm from its Go module into .cache/tools/bin (first time ~4 min)"
	@echo "make tools-build   build the Go test tools (Argo CD health in gopher-lua, kstatus, cyclonus; Prometheus and"
	@echo "                   promtool, first time ~10 min) into .cache/tools"
	@echo "make bench         every benchmark into docs/performance.md: dispatch (N = $(BENCH_GOALS), and"
	@echo "                   $(BENCH_STEADY) goals/s:seconds; against the floor and a Go controller-runtime controller,"
	@echo "                   built on demand, first time ~3 min), scale ($(BENCH_SCALE_GOALS) goals, $(BENCH_SOAK) s soak), agent loop"
	@echo "make bench-smoke   all of them small (N = 100, 40 s soak), printed only; CI runs them too"
	@echo "make bench-loop    agent loop benchmark into docs/performance.md (Agent loop, Prompt cache)"
	@echo "make bench-start   start benchmark into docs/performance.md: apply -> first model request ($(BENCH_START_GOALS) goals, fresh and warm pods)"
	@echo "make bench-knowledge  lessons by namespaces' logins (and their query plans), checkpoints with and without"
	@echo "                   row-level security, 1,000,000 experiences, into docs/performance.md (Knowledge base)"
	@echo "make bench-gateway what the model gateway adds to 100 concurrent streamed calls, into docs/performance.md"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# ruff (bug-catching rules, no formatting), mypy on the product packages, import-linter's
# layer contracts; all configured in pyproject.toml, caches under .cache/.
lint: venv
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy
	$(BIN)/python .ci/lint_imports.py

unit: venv
	$(BIN)/pytest tests

e2e: venv cluster-build helm-build tools-build
	$(BIN)/pytest e2e

# PostgreSQL, Redis, Go, curl, openssl: checked first, so a machine without them stops at once
# with the install command instead of failing in the middle of the suite.
prerequisites:
	@tests/prerequisites.sh

# Bad input at length: e2e/test_fuzz.py with 1,000 examples per kind instead of the suite's few,
# and 10 namespaces of 50 per kind stored for real with the operator running instead of 2 of 8.
FUZZ_EXAMPLES ?= 1000
FUZZ_BATCHES ?= 10
FUZZ_LIVE_EXAMPLES ?= 50
fuzz: venv cluster-build
	OVERSEER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OVERSEER_FUZZ_BATCHES=$(FUZZ_BATCHES) \
	OVERSEER_FUZZ_LIVE_EXAMPLES=$(FUZZ_LIVE_EXAMPLES) $(BIN)/pytest -s e2e/test_fuzz.py

# The fault table: operator, leader, kube-apiserver and etcd killed or restarted under load, and the
# rest of e2e/chaos; exits non-zero when a goal was lost or run twice. e2e/test_chaos.py runs it reduced.
chaos: venv cluster-build
	$(BIN)/python -m e2e.chaos --full --docs docs/reliability.md

chaos-smoke: venv cluster-build
	$(BIN)/python -m e2e.chaos --reduced

test: prerequisites venv cluster-build helm-build tools-build
	$(BIN)/pytest tests e2e -m "not slow"

# Everything make test runs, and the tests marked slow (the benchmarks' smoke runs).
test-full: prerequisites venv cluster-build helm-build tools-build
	$(BIN)/pytest tests e2e

cluster-build:
	$(CLUSTER)/build.sh

tools-build:
	e2e/tools/health/build.sh
	e2e/tools/prometheus/build.sh

cluster: cluster-build
	$(CLUSTER)/up.sh

cluster-down:
	$(CLUSTER)/down.sh

crds: venv
	$(BIN)/overseer-crds --output crds

# The images' names and tag, in one place: the tag is the package version in pyproject.toml,
# which is also what the operator asks for by default (overseer/agent:VERSION) and the chart's
# appVersion. Override any of them: make images IMAGE_REGISTRY=ghcr.io/acme/ IMAGE_TAG=dev
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE_REGISTRY ?=
OPERATOR_IMAGE ?= $(IMAGE_REGISTRY)overseer/operator
AGENT_IMAGE ?= $(IMAGE_REGISTRY)overseer/agent
IMAGE_TAG ?= $(VERSION)
CONTAINER_ENGINES := docker podman buildah
CONTAINER_ENGINE ?= $(firstword $(foreach e,$(CONTAINER_ENGINES),$(if $(shell command -v $(e) 2>/dev/null),$(e))))
.PHONY: images install-check
# What the images hold, where no engine runs: operator/install-wheel.sh into a clean folder, then both
# commands from it against the local cluster (make test runs it too).
install-check: venv cluster-build
	$(BIN)/pytest e2e/test_install.py

images:
	@if [ -z "$(CONTAINER_ENGINE)" ]; then \
	  echo "make images: no container engine found (looked for $(CONTAINER_ENGINES) on PATH)." >&2; \
	  echo "Install one of them, or name one: make images CONTAINER_ENGINE=/path/to/podman" >&2; \
	  exit 1; fi
	@$(CONTAINER_ENGINE) info >/dev/null 2>&1 || { \
	  echo "make images: $(CONTAINER_ENGINE) is installed but does not work ('$(CONTAINER_ENGINE) info' failed:" \
	       "is its daemon running?)" >&2; exit 1; }
	$(CONTAINER_ENGINE) build --build-arg VERSION=$(VERSION) -f operator/Dockerfile -t $(OPERATOR_IMAGE):$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build --build-arg VERSION=$(VERSION) -f agent_image/Dockerfile -t $(AGENT_IMAGE):$(IMAGE_TAG) .

chart-crds: venv
	$(BIN)/overseer-crds --chart charts/overseer/templates/crds

helm-build:
	e2e/tools/helm/build.sh

manifests: venv helm-build
	$(BIN)/python -m e2e.chart manifests

demo: prerequisites venv cluster helm-build
	$(BIN)/python -m e2e.demo

BENCH_GOALS ?= 100,1000,5000
BENCH_CONTENDERS ?= direct,baseline,controller-runtime,overseer
BENCH_REPEAT ?= 3
BENCH_STEADY ?= 20:60
BENCH_ARGS ?=  # e.g. --profile (needs py-spy), --wait-quiet 600
BENCH_SCALE_GOALS ?= 10000
BENCH_SOAK ?= 3600
BENCH_START_GOALS ?= 50
.PHONY: bench bench-smoke bench-loop bench-scale bench-knowledge bench-gateway bench-start
BENCH_LOOP_ARGS ?=  # e.g. --wait-quiet 300, --no-cluster
bench: venv cluster-build
	$(BIN)/python -m e2e.bench.dispatch --goals $(BENCH_GOALS) --contenders $(BENCH_CONTENDERS) --repeat $(BENCH_REPEAT) --steady $(BENCH_STEADY) --docs docs/performance.md $(BENCH_ARGS)
	$(BIN)/python -m e2e.bench.scale --goals $(BENCH_SCALE_GOALS) --soak $(BENCH_SOAK) --docs docs/performance.md
	$(BIN)/python -m e2e.bench.loop --docs docs/performance.md $(BENCH_LOOP_ARGS)
	$(BIN)/python -m e2e.bench.knowledge --docs docs/performance.md
	$(BIN)/python -m e2e.bench.gateway --docs docs/performance.md
	$(BIN)/python -m e2e.bench.start --goals $(BENCH_START_GOALS) --docs docs/performance.md
	$(BIN)/python -m e2e.bench.start --goals $(BENCH_START_GOALS) --warm-pool 1 --docs docs/performance.md

bench-scale: venv cluster-build
	$(BIN)/python -m e2e.bench.scale --goals $(BENCH_SCALE_GOALS) --soak $(BENCH_SOAK) --docs docs/performance.md

bench-smoke: venv cluster-build
	$(BIN)/python -m e2e.bench.dispatch --goals 100 --steady 10:5 $(BENCH_ARGS)
	$(BIN)/python -m e2e.bench.scale --goals 300 --agents 10 --slots 5 --soak 40 --churn 5
	$(BIN)/python -m e2e.bench.loop --quick $(BENCH_LOOP_ARGS)
	$(BIN)/python -m e2e.bench.knowledge --experiences 20000 --queries 50 --goals 5
	$(BIN)/python -m e2e.bench.gateway --requests 200 --first-token 0.05 --event-interval 0.01
	$(BIN)/python -m e2e.bench.start --goals 5
	$(BIN)/python -m e2e.bench.start --goals 3 --warm-pool 1

BENCH_GATEWAY_ARGS ?=  # e.g. --variant before:PYTHONPATH=/tmp/old/operator (an older checkout beside this one)
bench-gateway: venv cluster-build
	$(BIN)/python -m e2e.bench.gateway --docs docs/performance.md $(BENCH_GATEWAY_ARGS)

bench-start: venv cluster-build
	$(BIN)/python -m e2e.bench.start --goals $(BENCH_START_GOALS) --docs docs/performance.md
	$(BIN)/python -m e2e.bench.start --goals $(BENCH_START_GOALS) --warm-pool 1 --docs docs/performance.md

bench-loop: venv cluster-build
	$(BIN)/python -m e2e.bench.loop --docs docs/performance.md $(BENCH_LOOP_ARGS)

bench-knowledge: venv
	$(BIN)/python -m e2e.bench.knowledge --docs docs/performance.md

clean: cluster-down
	rm -rf .cache/control-plane/run
