# syntax=docker/dockerfile:1
# The relay service image (ECR `deploysphere-relay`): Redis pub/sub -> API Gateway
# PostToConnection. Build from the repository root:
#   docker buildx build --platform linux/arm64 -f build-image/relay.Dockerfile -t <repo>:<tag> .
FROM rust:1.95-bookworm AS compile
WORKDIR /src
# Packages are Debian 12's current ones (security fixes included); the base image
# tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl \
    && rm -rf /var/lib/apt/lists/*
# Amazon RDS's CA bundle: the relay checks the database's certificate against it.
RUN curl -fsSL https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem -o /rds-ca.pem
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p deploysphere-lambda --bin deploysphere-relay \
    && cp target/release/deploysphere-relay /relay

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group relay
COPY --from=compile /relay /usr/local/bin/relay
COPY --from=compile /rds-ca.pem /etc/deploysphere/rds-ca.pem
USER 10001
# ECS starts a new task when the relay exits; it serves nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/relay"]
