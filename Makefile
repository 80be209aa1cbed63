# GoChat — every command people type. `make help` lists them.
SHELL := /bin/bash
export GOTOOLCHAIN := local
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null)
PKGS := $(addsuffix /...,$(MODULES))

.DEFAULT_GOAL := help

help: ## list targets
	@awk 'BEGIN{FS=":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## everything on this machine in one process (embedded etcd, SQLite, in-process bus)
	go run ./cmd/gochat

build: ## build bin/gochat
	go build -o bin/gochat ./cmd/gochat

test: ## all tests of every module, race detector on (needs MariaDB + Redis on 127.0.0.1)
	go test -race -count=1 -timeout 12m $(PKGS)

test-integration: ## only the tests that use MariaDB, Redis, etcd and kfake
	go test -race -count=1 -timeout 10m ./repo/... ./logic/pushq/... ./cmd/gochat/...

test-browser: ## real Chromium against the gateway (needs chromium + npm ci in web/e2e)
	go test -count=1 -run TestBrowserClient ./cmd/gochat/

test-short: ## unit tests only (no external services)
	go test -race -count=1 -short $(PKGS)

gen: ## regenerate kitex_gen/ from idl/ (kitex v0.16.3 pinned by the tool directive in go.mod)
	./scripts/gen.sh

check-gen: gen ## CI: fail when kitex_gen/ is stale
	@git diff --exit-code --stat -- kitex_gen || { echo "kitex_gen is stale: run make gen and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- kitex_gen)" || { echo "kitex_gen has untracked files: run make gen and commit"; git status --porcelain -- kitex_gen; exit 1; }

lint: ## gofmt + go vet over every module
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	go vet $(PKGS)

tidy: ## go mod tidy in every module
	for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

bench: ## one benchmark: make bench S=conns|latency|throughput|fanout [T=all|split] [G=gateways] (see bench/README.md)
	./scripts/bench.sh -t $(or $(T),all) -g $(or $(G),2) $(or $(S),quick)

bench-quick: ## all four harnesses at reduced size on one gochat process (under 5 minutes)
	./scripts/bench.sh quick

bench-full: ## all four at the target sizes on a 16-gateway dev cluster (300k sockets)
	./scripts/bench.sh full

.PHONY: help run build test test-integration test-browser test-short gen check-gen lint tidy bench bench-quick bench-full

cluster-up: ## dev cluster on this machine: devetcd, devkafka (in-memory), repo, logic, task, N=2 gateways (N=3 make cluster-up)
	./scripts/cluster.sh up -n $(or $(N),2)

cluster-down: ## stop exactly the processes cluster-up started (by pid; logs stay in data/cluster)
	./scripts/cluster.sh down

cluster-status: ## running/dead, pid, ready of each dev-cluster process
	./scripts/cluster.sh status

.PHONY: cluster-up cluster-down cluster-status
