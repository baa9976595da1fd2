# The two commands a newcomer needs: `make demo` and `make test`. Both bring the dev stack up.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test unit up down build

up:
	scripts/devstack up

down:
	scripts/devstack down

build:
	$(CARGO) build

# Stack up, sample Sunbird telemetry produced, backup written, resulting blob names listed.
demo: up build
	scripts/demo

# Every test: unit tests plus integration tests against the real Kafka and Azurite.
test: up
	set -a; eval "$$(scripts/devstack env)"; set +a; $(CARGO) test --all-targets

# Pure-logic tests only; no services needed.
unit:
	$(CARGO) test --lib
