# syntax=docker/dockerfile:1
#
# The dermaga image: `docker build -t <registry>/dermaga:<tag> .` (BuildKit, the default
# builder since Docker 23). Without a Docker daemon, image/build.sh builds the same files into
# an OCI layout with umoci (docs/install.md); tests/it/image.rs checks that the two agree.
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

# The image's whole file system, by image/rootfs.sh (the same script image/build.sh runs): the
# binary, the glibc and libgcc libraries it links, CA certificates, /etc/passwd with the
# non-root user 65532, an empty /tmp; no shell, no package manager.
FROM docker.io/library/debian:bookworm-slim AS rootfs
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /dermaga /dermaga
COPY image/rootfs.sh /rootfs.sh
RUN bash /rootfs.sh /dermaga /rootfs

FROM scratch
COPY --from=rootfs /rootfs/ /
# The admin server (--admin-address, default 0.0.0.0:10254): /healthz, /readyz, /metrics,
# /routes. The data ports are the keys of the port maps and are not known here.
EXPOSE 10254
# The non-root user of /etc/passwd, numeric so that Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/dermaga"]
