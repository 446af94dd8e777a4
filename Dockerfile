# syntax=docker/dockerfile:1
# hubgate container image: built in the official Rust image, run from a distroless image
# (glibc and libgcc, no shell, no package manager) as the non-root user `nonroot`.
#
#   docker build -t hubgate .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/my-config.toml:/etc/hubgate/config.toml:ro" hubgate
#
# The config is read from /etc/hubgate/config.toml (HUBGATE_CONFIG); the image ships
# deploy/config.toml there, which listens on 0.0.0.0 and forwards to api.hubapi.com.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the benches, so cargo needs them to read the manifest.
COPY benches ./benches
COPY src ./src
# Registry and target caches survive between builds (BuildKit), so a code change
# rebuilds hubgate only, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hubgate \
    && cp target/release/hubgate /usr/local/bin/hubgate

FROM gcr.io/distroless/cc-debian13:nonroot AS runtime
COPY --from=build /usr/local/bin/hubgate /usr/local/bin/hubgate
COPY deploy/config.toml /etc/hubgate/config.toml
ENV HUBGATE_CONFIG=/etc/hubgate/config.toml
USER nonroot:nonroot
# 8080: callers' base URL ([server] listen); 9090: admin ([server] admin_listen).
EXPOSE 8080 9090
# The binary probes its own admin /healthz (no curl in a distroless image); the address
# comes from the config's admin_listen.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/hubgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/hubgate"]
CMD ["run"]
