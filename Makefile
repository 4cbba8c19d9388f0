# isorun entry points. `run` and `test` bootstrap the machine first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:/usr/local/go/bin:$(PATH)
export GOTOOLCHAIN ?= auto
export CGO_ENABLED := 0

AGENT_BIN := agent/bin/isorun-agent
AGENT_SRC := $(shell find agent -name '*.go' -o -name go.mod -o -name go.sum 2>/dev/null)

.PHONY: setup run test lint test-agent test-py fixtures bench clean agent

setup:
	@scripts/setup.sh

agent: $(AGENT_BIN)

$(AGENT_BIN): $(AGENT_SRC)
	cd agent && go build -trimpath -ldflags='-s -w' -o bin/isorun-agent .

# The main job on the embedded default: `isorun up` with its short names served from images
# built here (no Docker Hub needed), then the landing page's examples/spawn.py against it.
run: setup
	@scripts/run-example.sh

lint:
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy
	cd agent && go vet ./...

test-agent:
	cd agent && go test ./...

test-py:
	uv run pytest -q

test: setup lint test-agent test-py

fixtures: setup
	uv run python -m tests.fixtures.build

bench: setup
	# bench.boot measures cold boots; with templates its creates would be pool takes.
	ISORUN_TEMPLATES=false uv run python -m bench.boot
	uv run python -m bench.api
	uv run python -m bench.snapshots
	uv run python -m bench.network

clean:
	rm -rf agent/bin
