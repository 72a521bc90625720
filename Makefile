# agent-host build, run and test entry points. `make run` and `make test`
# set up everything they need (Go modules, the Python virtual environment
# with the real py-mco-agent) on a fresh machine.

GO      ?= go
PYTHON  ?= python3
VENV    ?= .venv
GOOS    := $(shell $(GO) env GOOS)
GOARCH  := $(shell $(GO) env GOARCH)
BIN     := bin/agent-host
# The version rpcutil inventory, choria_util info and `agent-host version`
# report: the nearest v* tag (v1.2.3 → 1.2.3, with -N-gHASH after it),
# else the development version with the commit.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null | sed 's/^v//')
ifeq ($(VERSION),)
VERSION := 0.1.0-dev+$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
endif
CLOCK   := testdata/agents/clock/clock/clock-$(GOOS)_$(GOARCH)
GREETER := testdata/agents/greeter/greeter/greeter-$(GOOS)_$(GOARCH)
PYENV   := $(VENV)/.installed
# sdk-python is installed into a virtual environment of its own: .venv has
# the real py-mco-agent, whose import names (mco_agent, choria_external)
# the SDK also provides.
SDKVENV ?= .venv-sdk
SDKENV  := $(SDKVENV)/.installed
SDKSRC  := sdk-python/pyproject.toml sdk-python/requirements-test.txt $(wildcard sdk-python/src/*/*.py sdk-python/src/agent_host/schemas/*.json)
# The pool tests also run sdk-python's pooltest agent with $(SDKVENV)'s
# interpreter (runner/runnertest.PythonAgent), so test-go needs it.
# Agents get the host's PATH; the virtual environment first makes
# `#!/usr/bin/env python3` agents find py-mco-agent.
AGENT_PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all build run dev test test-go test-interop test-python sdk-venv bench bench-go bench-e2e bench-long bench-tools bench-load soak generate vet clean FORCE

all: build

build: $(BIN) $(CLOCK) $(GREETER)

$(BIN): FORCE
	$(GO) build -ldflags "-X github.com/agent-host/agent-host/host.Version=$(VERSION)" -o $@ ./cmd/agent-host

$(CLOCK): testdata/agents-src/clock/main.go
	$(GO) build -o $@ ./testdata/agents-src/clock

$(GREETER): sdk-go/examples/greeter/main.go sdk-go/agent/*.go protocol/worker/*.go protocol/grpcplugin/*.go
	$(GO) build -o $@ ./sdk-go/examples/greeter

$(PYENV): testdata/pymco/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r testdata/pymco/requirements.txt
	touch $@

# The other releases of py-mco-agent, for sdk-python's compatibility test
# (sdk-python/tests/test_compat.py), each in its own environment.
PYMCO03      := .venv-pymco03/.installed
PYMCO04PCE01 := .venv-pymco04-pce01/.installed

.venv-%/.installed:
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/pip install --disable-pip-version-check -q -r testdata/pymco/$(PYMCO_REQS_$*)
	touch $@

PYMCO_REQS_pymco03      := requirements-0.3.txt
PYMCO_REQS_pymco04-pce01 := requirements-0.4-pce0.1.txt
$(PYMCO03): testdata/pymco/requirements-0.3.txt
$(PYMCO04PCE01): testdata/pymco/requirements-0.4-pce0.1.txt

$(SDKENV): $(SDKSRC)
	$(PYTHON) -m venv $(SDKVENV)
	$(SDKVENV)/bin/pip install --disable-pip-version-check -q ./sdk-python -r sdk-python/requirements-test.txt
	touch $@

## sdk-venv: the virtual environment with sdk-python installed (and pytest)
sdk-venv: $(SDKENV)

## run: serve the example agents on an embedded NATS broker (Ctrl-C stops)
run: build $(PYENV)
	PATH="$(AGENT_PATH)" $(BIN) run --config testdata/config/dev.conf --plugins testdata/agents

## dev: a development Choria setup: CA, certificates, a TLS broker, the example agents with the file provider, and a client.conf for choria (Ctrl-C stops)
dev: build $(PYENV)
	PATH="$(AGENT_PATH)" $(BIN) dev --plugins testdata/agents

## test: every test, including the interop tests against the real Choria client code and the Python SDK's
test: test-go test-interop test-python

test-go: $(PYENV) $(SDKENV) $(CLOCK) $(GREETER)
	PATH="$(AGENT_PATH)" $(GO) test -race -count=1 ./...

test-interop: $(PYENV) $(SDKENV)
	cd testdata/choria-interop && PATH="$(AGENT_PATH)" $(GO) test -count=1 ./...

test-python: $(SDKENV) $(PYENV) $(PYMCO03) $(PYMCO04PCE01)
	PYMCO_04=$(CURDIR)/$(VENV) PYMCO_04_PCE01=$(CURDIR)/.venv-pymco04-pce01 PYMCO_03=$(CURDIR)/.venv-pymco03 \
		$(SDKVENV)/bin/python -m pytest -q -p no:cacheprovider sdk-python/tests

## bench: Go benchmarks, then the end-to-end side-by-side run against the go-choria server; writes BENCHMARKS.md and BENCHMARKS.png
bench: bench-go bench-e2e

bench-go: $(PYENV) $(SDKENV) $(CLOCK)
	PATH="$(AGENT_PATH)" $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

BENCHTIME ?= 2s
REFSERVER := bin/reference-server

# The load tool, the bench driver, the slow agent and the reference server:
# the real go-choria server, built from its packages in testdata/choria-interop.
bench-tools: build
	$(GO) build -o bin/agent-host-load ./cmd/agent-host-load
	$(GO) build -o bin/agent-host-bench ./cmd/agent-host-bench
	$(GO) build -o bin/pooltest ./testdata/agents-src/pooltest
	if [ -d testdata/choria-interop/cmd/reference-server ]; then \
		cd testdata/choria-interop && $(GO) build -o ../../$(REFSERVER) ./cmd/reference-server; \
	else \
		rm -f $(REFSERVER); echo "testdata/choria-interop/cmd/reference-server is missing: the bench runs without the reference server"; \
	fi

## bench-e2e: go-choria, agent-host exec and agent-host pool serving the same agents over TLS with signed requests
## (parrot twice: with py-mco-agent from $(VENV), and with agent-host's Python SDK from $(SDKVENV))
bench-e2e: bench-tools $(PYENV) $(SDKENV)
	PATH="$(AGENT_PATH)" bin/agent-host-bench run --sdk-venv $(SDKVENV) --out BENCHMARKS.md --plot BENCHMARKS.png

## bench-long: 200 000 pooled requests against agent-host, its memory and its workers' watched; writes BENCHMARKS.md
bench-long: bench-tools
	PATH="$(AGENT_PATH)" bin/agent-host-bench long --out BENCHMARKS.md --requests 200000

# bench-load and soak run copies of dev.conf in bin/, without the policies
# beside dev.conf: they measure the host without authorization.
## bench-load: a quick load run against `agent-host run` on its embedded broker, without TLS or signing (printed only)
LOAD_PORT ?= 14333
LOAD      := bin/agent-host-load --broker nats://127.0.0.1:$(LOAD_PORT) --identity dev1.example.net --duration 10s

bench-load: build $(PYENV)
	$(GO) build -o bin/agent-host-load ./cmd/agent-host-load
	sed 's/127.0.0.1:4222/127.0.0.1:$(LOAD_PORT)/' testdata/config/dev.conf > bin/load.conf
	echo 'loglevel = warn' >> bin/load.conf
	echo 'rpcauthorization = false' >> bin/load.conf
	PATH="$(AGENT_PATH)" $(BIN) run --config bin/load.conf --plugins testdata/agents & pid=$$!; \
	trap "kill $$pid" EXIT; sleep 2; \
	$(LOAD) --concurrency 1 rpcutil ping && \
	$(LOAD) --concurrency 8 rpcutil ping && \
	$(LOAD) --concurrency 1 nodeinfo uptime && \
	$(LOAD) --concurrency 4 nodeinfo uptime && \
	$(LOAD) --concurrency 4 clock now && \
	$(LOAD) --concurrency 2 --data '{"message":"hello"}' parrot echo && \
	echo "agent-host RSS after the runs: $$(ps -o rss= -p $$pid) KiB"

## soak: a million requests (pings, an exec agent, malformed messages) against `agent-host run`; writes BENCHMARKS.md
SOAK_PORT     ?= 14334
SOAK_REQUESTS ?= 1000000
SOAK_MIX      ?= rpcutil\#ping:97,nodeinfo\#uptime:1,malformed:2

soak: build $(PYENV)
	$(GO) build -o bin/agent-host-load ./cmd/agent-host-load
	sed 's/127.0.0.1:4222/127.0.0.1:$(SOAK_PORT)/' testdata/config/dev.conf > bin/soak.conf
	echo 'loglevel = warn' >> bin/soak.conf
	echo 'rpcauthorization = false' >> bin/soak.conf
	PATH="$(AGENT_PATH)" $(BIN) run --config bin/soak.conf --plugins testdata/agents 2> bin/soak.log & pid=$$!; \
	trap "kill $$pid" EXIT; sleep 2; \
	bin/agent-host-load --broker nats://127.0.0.1:$(SOAK_PORT) --identity dev1.example.net --concurrency 8 \
		--requests $(SOAK_REQUESTS) --pid $$pid --mix '$(SOAK_MIX)' --report BENCHMARKS.md

## generate: the JSON Schemas of protocol/schemas from the Go types, and sdk-python's copies of the ones it reads
generate:
	$(GO) generate ./...
	cp protocol/schemas/io.choria.mcorpc.external.v1.*.json protocol/schemas/io.agent-host.worker.*.json sdk-python/src/agent_host/schemas/

vet:
	$(GO) vet ./...

clean:
	rm -rf bin $(VENV) $(SDKVENV) .venv-pymco03 .venv-pymco04-pce01 $(CLOCK) $(GREETER)
