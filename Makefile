# The two commands a newcomer needs: `make demo` and `make test`. Both bring the dev stack up.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test unit up down build deps

# Build tools beyond Rust and cc (nasm, autotools for ISA-L's gzip); installs only what is missing.
deps:
	scripts/build-deps

up:
	scripts/devstack up

down:
	scripts/devstack down

build: deps
	$(CARGO) build

# Stack up, sample Sunbird telemetry produced, backup written, resulting blob names listed.
demo: up build
	scripts/demo

# Every test: unit tests plus integration tests against the real Kafka, ZooKeeper, Azurite, S3
# server and GCS emulator; then the storage-facing tests again, the same code, against S3 and
# against GCS (KBACKUP_TEST_STORAGE=s3, =gcs).
# The rolling restart of a three-broker cluster (tests/rolling_restart.rs, three minutes) runs in
# the Azure and S3 passes.
STORAGE_TESTS := --test run --test parquet --test exactly_once --test faults --test tools --test verify --test stack --test records --test takeover --test truthful --test create_only --test completion --test stall --test secor_stock --test third_pass
test: deps up
	set -a; eval "$$(scripts/devstack env)"; set +a; $(CARGO) test --all-targets && \
	  KBACKUP_TEST_STORAGE=s3 $(CARGO) test $(STORAGE_TESTS) --test rolling_restart && \
	  KBACKUP_TEST_STORAGE=gcs $(CARGO) test $(STORAGE_TESTS)

# Pure-logic tests only; no services needed.
unit: deps
	$(CARGO) test --lib
