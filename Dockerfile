# syntax=docker/dockerfile:1
# Build: docker build -t kbackup .
# Run:   docker run --rm -v "$PWD/config:/config:ro" -e AZURE_STORAGE_CONNECTION_STRING -p 9464:9464 kbackup
# The build step is the README's (`cargo build --release`); librdkafka is compiled from source.
# Probes: GET :9464/health/live and :9464/health/ready (see deploy/kubernetes.yaml); the final
# image has no shell tools, so no HEALTHCHECK command is baked in.

FROM rust:1-bookworm AS build
# librdkafka, (for TLS) OpenSSL and ISA-L (gzip) are compiled from source; perl and make come
# with the base image, ISA-L needs nasm and autotools, cmake is kept for the C parts of other
# crates. Versions come with the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm autoconf automake libtool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/kbackup

FROM debian:bookworm-slim
# Only CA certificates besides the binary (storage and secured brokers are reached over TLS).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home kbackup
COPY --from=build /src/target/release/kbackup /usr/local/bin/kbackup
USER 10001
ENV KBACKUP_LOG_FORMAT=json \
    KBACKUP_METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/kbackup"]
CMD ["run", "--config", "/config/kbackup.toml"]
