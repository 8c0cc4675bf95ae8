# syntax=docker/dockerfile:1
#
# The dermaga image: `docker build -t <registry>/dermaga:<tag> .` (BuildKit, the default
# builder since Docker 23). See docs/install.md.
#
# Build stage: the release binary. The cache mounts keep the crates.io downloads and the
# compiled dependencies between builds, so a change to dermaga's own sources recompiles only
# dermaga. Cargo.lock is used as is (--locked).
ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dermaga \
 && cp target/release/dermaga /dermaga

# Final stage: glibc and libgcc only (distroless "cc", the same Debian 12 as the builder), no
# shell, no package manager. The binary is the whole image.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /dermaga /dermaga
# The admin server (--admin-address, default 0.0.0.0:10254): /healthz, /readyz, /metrics,
# /routes. The data ports are the keys of the port maps and are not known here.
EXPOSE 10254
# distroless's "nonroot" user, numeric so that Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/dermaga"]
