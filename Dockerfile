# syntax=docker/dockerfile:1
# Build: docker build -t kbackup .      Run: docker run --rm -v $PWD/config:/config kbackup run --config /config/kbackup.toml
# The build steps are the README's (`cargo build --release`); librdkafka is compiled from source.

FROM rust:1.85-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/kbackup

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home kbackup
COPY --from=build /src/target/release/kbackup /usr/local/bin/kbackup
USER 10001
ENV KBACKUP_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/kbackup"]
CMD ["run", "--config", "/config/kbackup.toml"]
