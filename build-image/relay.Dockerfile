# syntax=docker/dockerfile:1
# The relay service image (ECR `deploysphere-relay`): Redis pub/sub -> API Gateway
# PostToConnection. Build from the repository root:
#   docker buildx build --platform linux/arm64 -f build-image/relay.Dockerfile -t <repo>:<tag> .
FROM rust:1.95-bookworm AS compile
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p deploysphere-lambda --bin deploysphere-relay \
    && cp target/release/deploysphere-relay /relay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group relay
COPY --from=compile /relay /usr/local/bin/relay
# Amazon RDS's CA bundle: the relay checks the database's certificate against it.
ADD https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/deploysphere/rds-ca.pem
USER relay
ENTRYPOINT ["/usr/local/bin/relay"]
