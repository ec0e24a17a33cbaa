# shopmesh — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT    := $(abspath .)
BIN     := $(ROOT)/bin
export PATH := $(BIN):$(PATH)

# The services are the folders of services/ with a service.yaml (deploy/servicelist): nothing to edit
# here when one is added. go.work's services are generated from the same files (`make gen`).
SERVICES := $(patsubst services/%/service.yaml,%,$(wildcard services/*/service.yaml))
MODULES  := proto pkg/platform pkg/platform/contrib/nacos $(addprefix services/,$(SERVICES)) deploy loadtest
comma    := ,
space    := $(empty) $(empty)

# Pinned tool versions: `make tools` installs exactly these into ./bin.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION        := v0.8.2
GOLANGCI_LINT_VERSION      := v2.15.0

# Endpoints of the real servers, written by `make infra-up`; when present, `make test`
# runs the real-infrastructure tests against them.
-include .run/infra.env

# `buf breaking` compares against this git ref.
BREAKING_AGAINST ?= HEAD~1

GOTEST_FLAGS ?= -count=1

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Install pinned generators and linters into ./bin (shellcheck comes from apt: .ci/run installs it).
	@mkdir -p $(BIN)
	GOBIN=$(BIN) GOWORK=off go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) GOWORK=off go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(BIN) GOWORK=off go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(BIN) GOWORK=off go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: proto
proto: ## Regenerate Go code from proto/ (protovalidate's validate.proto into proto/deps, buf lint + buf generate).
	cd proto && go run ./cmd/protovalidate-proto -out deps
	cd proto && buf lint
	rm -rf proto/gen/go
	cd proto && buf generate

.PHONY: proto-check
# Contract files removed on purpose, left out of `buf breaking` (their package's removal is the break):
# shopmesh/validate, the own validation options that protovalidate replaced (issue 17; nothing on the
# wire changed). Harmless once BREAKING_AGAINST no longer has them.
BREAKING_REMOVED ?= shopmesh/validate

# buf breaking compares images of shopmesh/ only (buf/validate is an import): the ref is extracted with
# git archive, given today's proto/deps if its buf.yaml declares that module (deps/ is not in git).
proto-check: proto ## Fail if generated code drifted from proto/, then run buf breaking.
	@if [ -n "$$(git status --porcelain -- proto/gen)" ]; then \
		echo "proto/gen is out of date; run 'make proto' and commit:"; git status --porcelain -- proto/gen; exit 1; \
	fi
	@echo "proto/gen is up to date"
	@if git cat-file -e $(BREAKING_AGAINST):proto/buf.yaml 2>/dev/null; then \
		set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
		git archive $(BREAKING_AGAINST) proto | tar -x -C "$$tmp"; \
		if grep -q 'path: deps' "$$tmp/proto/buf.yaml"; then cp -R proto/deps "$$tmp/proto/"; fi; \
		cd proto; \
		buf build "$$tmp/proto" --path "$$tmp/proto/shopmesh" $(foreach p,$(BREAKING_REMOVED),--exclude-path "$$tmp/proto/$(p)") -o "$$tmp/against.binpb"; \
		buf build . --path shopmesh -o "$$tmp/input.binpb"; \
		buf breaking "$$tmp/input.binpb" --against "$$tmp/against.binpb" --exclude-imports; \
		echo "buf breaking: no breaking changes against $(BREAKING_AGAINST)"; \
	else echo "buf breaking: $(BREAKING_AGAINST) has no proto/buf.yaml; nothing to compare"; fi

.PHONY: build
build: ## Build every module.
	@for m in $(MODULES); do echo "== build $$m"; (cd $$m && go build ./...) || exit 1; done

.PHONY: test
test: ## Run every module's tests (real-server tests run when .run/infra.env or the env vars are present).
	@for m in $(MODULES); do echo "== test $$m"; (cd $$m && go test $(GOTEST_FLAGS) ./...) || exit 1; done

.PHONY: test-race
test-race: ## make test under the race detector (several times slower; not in CI yet, see docs/STATUS.md).
	@for m in $(MODULES); do echo "== test-race $$m"; (cd $$m && go test -race $(GOTEST_FLAGS) ./...) || exit 1; done

.PHONY: lint
lint: gen-check shellcheck ## gen-check, shellcheck, then golangci-lint (.golangci.yml: go vet, staticcheck, ...) on every module.
	@command -v golangci-lint >/dev/null || { echo "golangci-lint is not installed: make tools"; exit 1; }
	@rc=0; for m in $(MODULES); do echo "== lint $$m"; \
		(cd $$m && golangci-lint run -c $(ROOT)/.golangci.yml ./...) || rc=1; done; exit $$rc

# The shell scripts: the *.sh files git tracks or would add, and the other files whose first line is a
# sh/bash shebang (.ci/run). -x follows the files they source when shellcheck can resolve them.
.PHONY: shellcheck
shellcheck: ## shellcheck every shell script (*.sh and sh/bash shebang files such as .ci/run).
	@command -v shellcheck >/dev/null || { echo "shellcheck is not installed: apt-get install -y shellcheck"; exit 1; }
	@git ls-files -co --exclude-standard | while IFS= read -r f; do \
		[ -f "$$f" ] || continue; \
		case $$f in *.sh) echo "$$f"; continue ;; esac; \
		first=; IFS= read -r first < "$$f" || true; \
		case $$first in '#!'*bash*|'#!'*/sh|'#!'*/sh' '*|'#!'*' sh'|'#!'*' sh '*) echo "$$f" ;; esac; \
	done | { mapfile -t scripts; echo "== shellcheck $${scripts[*]}"; shellcheck -x "$${scripts[@]}"; }

.PHONY: tidy
tidy: ## go mod tidy in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

.PHONY: deps-check
deps-check: ## Fail if go mod tidy or go work sync would change a go.mod/go.sum, or two modules require different versions of a dependency.
	cd deploy && go run ./cmd/depscheck -root $(ROOT)

.PHONY: vulncheck
vulncheck: ## govulncheck every module against a local database built from golang.org/x/vulndb (cached).
	bash deploy/vulncheck.sh

CERTS_DIR ?= $(ROOT)/.run/certs

.PHONY: certs
certs: ## Issue a dev CA and one mTLS certificate per service (ECDSA P-256, SPIFFE ids) into .run/certs (+ .run/certs/<svc>/).
	cd pkg/platform && go run ./cmd/certs -out $(CERTS_DIR) -per-service -services $(subst $(space),$(comma),$(SERVICES))

SECRETS_DIR ?= $(ROOT)/.run/secrets
# ROTATE=1 draws every value anew, ROTATE=name,name only those (names: the files of SECRETS_DIR).
ROTATE ?=

.PHONY: secrets
secrets: certs ## make certs, then generate the compose and k8s dev secrets (passwords, JWT keys, tokens) into .run/secrets (kept; ROTATE=1).
	cd deploy && go run ./cmd/secrets -root $(ROOT) -out $(SECRETS_DIR) $(if $(ROTATE),-rotate $(ROTATE))

.PHONY: gen
gen: ## Regenerate go.work, Dockerfile, compose, k8s and Prometheus lines from services/*/service.yaml.
	cd deploy && go run ./cmd/servicegen -root $(ROOT)

.PHONY: gen-check
gen-check: ## Fail (printing the diff) if `make gen` would change a file.
	cd deploy && go run ./cmd/servicegen -root $(ROOT) -check

.PHONY: new-service
new-service: ## Create a service in the one shape, wired everywhere: make new-service NAME=shipping.
	cd deploy && go run ./cmd/newservice -root $(ROOT) -name "$(NAME)"

.PHONY: new-service-check
new-service-check: ## CI: make new-service NAME=demo in a throwaway copy; build, lint, test it; start it in make run.
	bash deploy/newservice-check.sh

# module-dir:package:FuzzTarget:executions run by fuzz-short; go test -fuzz takes one target per run.
# The budget is a count of executions (about 10 s each on a 2-core machine), not a duration: with
# -fuzztime=<duration> Go 1.26's fuzz coordinator can fail a clean run with "context deadline exceeded"
# when the deadline fires while a starved worker is mid-call (golang/go#75804; CI hit it once).
# FUZZTIME=30s (or 50000x) overrides every budget for a longer local search.
FUZZ_TARGETS := \
	services/gateway:./internal/httpapi:FuzzDecodeCreateOrder:10000 \
	services/gateway:./internal/httpapi:FuzzDecodeCancelOrder:5000 \
	services/gateway:./internal/httpapi:FuzzDecodeStockImport:3000 \
	services/gateway:./internal/httpapi:FuzzErrorMapping:2000 \
	pkg/platform:./validation:FuzzValidate:20000
FUZZTIME ?=

.PHONY: fuzz-short
fuzz-short: ## Run every fuzz target briefly (a fixed count of executions each; CI): no panics, bad input -> 4xx / INVALID_ARGUMENT.
	@set -e; for t in $(FUZZ_TARGETS); do \
		IFS=: read -r mod pkg fn n <<< "$$t"; \
		budget="$(FUZZTIME)"; budget="$${budget:-$${n}x}"; \
		echo "== fuzz $$mod $$pkg $$fn ($$budget)"; \
		(cd $$mod && go test -timeout 5m -run "^$$fn\$$" -fuzz "^$$fn\$$" -fuzztime="$$budget" $$pkg); \
	done

.PHONY: infra-up
infra-up: ## Install (cached) and start PostgreSQL, Kafka, NATS, Nacos and Jaeger on loopback.
	bash deploy/infra/infra.sh up

.PHONY: infra-down
infra-down: ## Stop the real servers started by infra-up.
	bash deploy/infra/infra.sh down

# Container images and the compose stack (deploy/docker, deploy/compose) need a Docker engine with the
# buildx and compose plugins; deploy/docker/require-docker.sh says what is missing.
IMAGE_TAG         ?= dev
COMPOSE           := docker compose -f deploy/compose/compose.yaml
# What deploy/compose/compose.yaml mounts: .run/certs/<svc> read-only at /certs, .run/secrets/compose/*.env.
COMPOSE_CERTS_DIR := $(ROOT)/.run/certs

.PHONY: images
images: ## docker build each service from deploy/docker/Dockerfile, tagged shopmesh/<svc>:dev (IMAGE_TAG=...).
	@bash deploy/docker/require-docker.sh $@ buildx
	@set -e; for s in $(SERVICES); do echo "== image shopmesh/$$s:$(IMAGE_TAG)"; \
		docker build -f deploy/docker/Dockerfile --build-arg SERVICE=$$s -t shopmesh/$$s:$(IMAGE_TAG) .; done

# The services run as your uid:gid (they must read the 0600 key files of `make secrets`) unless
# SHOPMESH_UID / SHOPMESH_GID are set; the environment wins over deploy/compose/.env.
.PHONY: compose-up
compose-up: ## make secrets (and certs), then build and start the compose stack, waiting for health; gateway on 127.0.0.1:8080.
	@bash deploy/docker/require-docker.sh $@ buildx compose
	@$(MAKE) --no-print-directory secrets CERTS_DIR=$(COMPOSE_CERTS_DIR) SECRETS_DIR=$(ROOT)/.run/secrets
	SHOPMESH_UID=$${SHOPMESH_UID:-$$(id -u)} SHOPMESH_GID=$${SHOPMESH_GID:-$$(id -g)} $(COMPOSE) up -d --build --wait

# VOLUMES=1 also drops the data volumes (PostgreSQL, Kafka, NATS).
VOLUMES ?=

.PHONY: compose-down
compose-down: ## Stop and remove the compose stack's containers and network (volumes kept; VOLUMES=1 drops them too).
	@bash deploy/docker/require-docker.sh $@ compose
	$(COMPOSE) down --remove-orphans$(if $(VOLUMES), -v)

# The stand-in images (deploy/compose/standin: a test fixture, see deploy/compose/README.md) replace the
# public images no registry serves here. COMPOSE_TEST_KEEP=1 leaves the stack up after a failure.
.PHONY: compose-test
compose-test: ## Start the Docker engine, build the stand-in images, then make compose-up, drive and fault the stack (deploy/composetest), make compose-down.
	bash deploy/compose/standin/engine.sh up
	bash deploy/compose/standin/build.sh
	cd deploy && COMPOSE_TEST=1 go test -count=1 -v -timeout 60m -run '^TestCompose$$' ./composetest/

.PHONY: engine-up engine-down standin-images
engine-up: ## Start a local Docker engine (root dockerd --iptables=false) + the compose and buildx plugins built from Go modules (for compose-test).
	bash deploy/compose/standin/engine.sh up

engine-down: ## Stop the Docker engine that engine-up started (its containers stop with it).
	bash deploy/compose/standin/engine.sh down

standin-images: ## Build the compose stand-in images (test fixture: deploy/compose/standin/build.sh; cached, FORCE=1 rebuilds).
	bash deploy/compose/standin/build.sh $(if $(FORCE),--force)

K8S_OUT ?= $(ROOT)/deploy/k8s/out

.PHONY: k8s-render
k8s-render: ## Render the kustomize overlays dev and prod into deploy/k8s/out/<overlay>.yaml (K8S_OUT=- for stdout).
	@cd deploy && go run ./cmd/k8s-render -k8s $(ROOT)/deploy/k8s -out $(K8S_OUT) dev prod

# The single-node cluster built here (deploy/k8s/cluster, root) with the dev overlay, driven by
# deploy/k8stest (see deploy/k8s/README.md). K8S_TEST_KEEP=1 leaves everything up after a failure;
# K8S_TEST_CLUSTER=keep uses a running cluster and leaves it up.
K8S_TEST_GO := go test -count=1 -v -timeout 40m -run '^TestK8s$$' ./k8stest/

.PHONY: k8s-up k8s-down k8s-test
k8s-up: ## Build (cached) and start the single-node cluster, load the images, apply the dev overlay, wait Ready, place 10 orders; leaves it up.
	bash deploy/compose/standin/engine.sh up
	cd deploy && K8S_TEST=1 K8S_TEST_MODE=up $(K8S_TEST_GO)

k8s-down: ## kubectl delete -k the dev overlay (and its volumes), then stop the cluster; checks that nothing of it is left.
	cd deploy && K8S_TEST=1 K8S_TEST_MODE=down $(K8S_TEST_GO)

k8s-test: ## Start the Docker engine, then cluster + dev overlay, drive and fault it (deploy/k8stest), delete it, cluster down.
	bash deploy/compose/standin/engine.sh up
	cd deploy && K8S_TEST=1 $(K8S_TEST_GO)

.PHONY: e2e
e2e: ## End-to-end: the whole stack as processes (make run's code), driven over gRPC and HTTP, invariants checked.
	cd deploy && go test -count=1 -v -run '^TestStack$$' ./localstack/

.PHONY: api-contract
api-contract: ## schemathesis 4.32 (cached venv) against make run's stack on free ports: every operation, --checks all, zero failures (deploy/contract).
	bash deploy/contract/run.sh

# SECURITY_INFRA_ENV: an env file of authenticated servers (INFRA_AUTH=1 infra.sh up), sourced in the
# recipe so that it wins over .run/infra.env; SECURITY_REPORT=FILE also writes the table (.json or .md).
SECURITY_INFRA_ENV ?=

.PHONY: security-test
security-test: ## Security suite (deploy/security): every attack tried against running components, a table of tries; fails if one succeeds.
	cd deploy && $(if $(SECURITY_INFRA_ENV),set -a && . $(abspath $(SECURITY_INFRA_ENV)) && set +a && ,)SECURITY_SUITE=1 go test -count=1 -v ./security/

.PHONY: bench-go
bench-go: ## Run the Go benchmarks of every module.
	@for m in $(MODULES); do (cd $$m && go test -run='^$$' -bench=. -benchmem ./...) || exit 1; done

# LOADTEST_ARGS is passed to loadtest/cmd/loadtest, e.g. LOADTEST_ARGS='-gateway http://127.0.0.1:8080
# -order 127.0.0.1:50051 -inventory 127.0.0.1:50061 -payment 127.0.0.1:50071' or '-stack .run/stack.json'
# against a running `make run`; without a target it starts its own stack on free ports (see -h, -list).
LOADTEST_ARGS ?=

.PHONY: loadtest
loadtest: ## Load scenarios (ghz runner + open-loop HTTP) against a stack it starts (~1 min); loadtest/out/report.{json,html}.
	cd loadtest && go run ./cmd/loadtest -root $(ROOT) $(LOADTEST_ARGS)

# K6CHECK_ARGS is passed to loadtest/cmd/k6check, e.g. K6CHECK_ARGS='-stack .run/stack.json' against a
# running `make run`, or '-max-duration 1m -timing' for the scripts' full minute on a quiet machine.
K6CHECK_ARGS ?=

.PHONY: k6-check
k6-check: ## The k6 scripts (loadtest/k6) as their headers say, without k6 (goja shim): setup, 5 s of each scenario, thresholds, against make run's stack on free ports (~1 min).
	cd loadtest && go run ./cmd/k6check -root $(ROOT) $(K6CHECK_ARGS)

# BENCH_ARGS is passed to loadtest/cmd/bench, e.g. BENCH_ARGS='-cases chain,mtls -rounds 5'.
BENCH_ARGS ?=

.PHONY: bench
bench: ## Side-by-side A/B benchmarks (CPU/request, QPS, p50/p99), benchstat files in loadtest/out (<~10 min).
	cd loadtest && go run ./cmd/bench -root $(ROOT) $(BENCH_ARGS)

# RUN_ARGS is passed to shopmesh-dev, e.g. RUN_ARGS='-inventory 3 -payment 3 -quiet'; see `bin/shopmesh-dev -h`.
RUN_ARGS ?=
# INFRA=1 runs the stack on the real servers of `make infra-up` (INFRA_ENV names their env file).
INFRA ?=
INFRA_ENV ?= $(ROOT)/.run/infra.env

.PHONY: run
run: ## Bring the whole suite up: embedded NATS + Kafka (kfake), SQLite in .data/, gateway on :8080 (INFRA=1: on the real servers).
	cd deploy && go build -o $(BIN)/shopmesh-dev ./cmd/shopmesh-dev
	$(BIN)/shopmesh-dev -root $(ROOT) $(if $(INFRA),-infra $(INFRA_ENV)) $(RUN_ARGS)

# CHAOS_ARGS is passed to loadtest/cmd/chaos, e.g. CHAOS_ARGS='-scenarios R1,R4 -rate 30 -fault 60s'.
# The campaign kills and restarts the servers of CHAOS_INFRA_ENV (sourced first: the PG_PORT of
# .run/infra.env, included above, must not win); infra.sh acts on the set its environment names
# (SHOPMESH_INFRA_ENV, SHOPMESH_INFRA_DIR, *_PORT) and the campaign refuses a mismatch. Point it at a
# private set while others use the shared one (docs/RELIABILITY.md).
CHAOS_ARGS ?=
CHAOS_INFRA_ENV ?= $(INFRA_ENV)

.PHONY: chaos
chaos: ## Fault campaign on the real servers (R1-R12): load, fault, recovery, audit; loadtest/out/chaos/report.{md,json,html}.
	set -a && . $(CHAOS_INFRA_ENV) && set +a && cd loadtest && go run ./cmd/chaos -root $(ROOT) -infra $(CHAOS_INFRA_ENV) $(CHAOS_ARGS)

.PHONY: chaos-ci
chaos-ci: ## Short fault campaign for CI (R1, R4, R6, R10; ~6 min): fails on any lost/duplicated/stuck order or 500.
	set -a && . $(CHAOS_INFRA_ENV) && set +a && cd loadtest && go run ./cmd/chaos -root $(ROOT) -infra $(CHAOS_INFRA_ENV) -ci $(CHAOS_ARGS)
