# The vt manager image (what charts/vt deploys by default). Build with `hack/image`.
#
# Stage 1 builds the release binary with the Rust toolchain and a C compiler (SQLite and ring
# are compiled from source; nothing else is needed: no protoc). Stage 2 is distroless: glibc,
# libgcc and CA certificates, no shell, running as the unprivileged user 65532.

# Any Rust at or above the workspace's rust-version; `1` is the newest stable.
ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# crates/vt's manifest names its end-to-end tests there.
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vt && \
    install -D -m 0755 target/release/vt /out/vt

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/vt /usr/local/bin/vt
USER 65532:65532
# 8443: tenants (TLS, routed by server name); 9090: /metrics and /healthz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/vt"]
CMD ["server", "--host-in-cluster", "--data-dir=/var/lib/vt", "--listen=0.0.0.0:8443", "--log-format=json"]
