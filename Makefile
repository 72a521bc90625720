# agent-host build, run and test entry points. `make run` and `make test`
# set up everything they need (Go modules, the Python virtual environment
# with the real py-mco-agent) on a fresh machine.

GO      ?= go
PYTHON  ?= python3
VENV    ?= .venv
GOOS    := $(shell $(GO) env GOOS)
GOARCH  := $(shell $(GO) env GOARCH)
BIN     := bin/agent-host
CLOCK   := testdata/agents/clock/clock/clock-$(GOOS)_$(GOARCH)
PYENV   := $(VENV)/.installed
# Agents get the host's PATH; the virtual environment first makes
# `#!/usr/bin/env python3` agents find py-mco-agent.
AGENT_PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all build run test test-go test-interop bench generate vet clean FORCE

all: build

build: $(BIN) $(CLOCK)

$(BIN): FORCE
	$(GO) build -o $@ ./cmd/agent-host

$(CLOCK): testdata/agents-src/clock/main.go
	$(GO) build -o $@ ./testdata/agents-src/clock

$(PYENV): testdata/pymco/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r testdata/pymco/requirements.txt
	touch $@

## run: serve the example agents on an embedded NATS broker (Ctrl-C stops)
run: build $(PYENV)
	PATH="$(AGENT_PATH)" $(BIN) run --config testdata/config/dev.conf --plugins testdata/agents

## test: every test, including the interop tests against the real Choria client code
test: test-go test-interop

test-go: $(PYENV) $(CLOCK)
	PATH="$(AGENT_PATH)" AGENT_HOST_VENV="$(CURDIR)/$(VENV)" $(GO) test -race -count=1 ./...

test-interop: $(PYENV)
	cd testdata/choria-interop && PATH="$(AGENT_PATH)" $(GO) test -count=1 ./...

bench: $(PYENV) $(CLOCK)
	PATH="$(AGENT_PATH)" $(GO) test -run '^$$' -bench . -benchmem ./...

generate:
	$(GO) generate ./...

vet:
	$(GO) vet ./...

clean:
	rm -rf bin $(VENV) $(CLOCK)
