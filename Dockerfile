# syntax=docker/dockerfile:1
#
# One image holds every binary of the suite: the sidecars (collector, processor, forwarder) and
# the demo apps (web-api, database-client, background-worker, traffic-generator). Each container
# in manifests/20-deployment.yaml names the binary it runs, so the image has no ENTRYPOINT.
#
#   docker build -t log-sidecars:dev .
#   docker run --rm log-sidecars:dev collector --help
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# ---- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# musl gives fully static binaries, so the final image needs no libc or loader.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*

# BuildKit sets TARGETARCH to the platform being built. amd64 builds x86_64-unknown-linux-musl;
# arm64 (Apple silicon, Graviton, kind on an M-series Mac) builds its native musl target, because
# linking x86_64 binaries on an arm64 builder would need a cross linker.
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "no musl target for TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"

WORKDIR /src
COPY . .

# The cache mounts keep the crates.io index, downloaded crates and compiled dependencies between
# builds. target/ is a cache mount too, so it is not part of the image layer: the binaries are
# copied out to /out in this same RUN. --locked: build exactly what Cargo.lock says.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" --workspace --bins \
 && mkdir -p /out \
 && for bin in collector processor forwarder \
               web-api database-client background-worker traffic-generator; do \
      cp "target/$target/release/$bin" /out/ || exit 1; \
    done

# ---- runtime -----------------------------------------------------------------------------------
# distroless/static: no shell or package manager, but CA certificates (for HTTPS sinks), tzdata,
# /etc/passwd and a PATH that includes /usr/local/bin.
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="log-sidecars" \
      org.opencontainers.image.description="Log sidecars and demo apps"

COPY --from=builder /out/ /usr/local/bin/

# The same uid/gid as the pod's securityContext (runAsUser/runAsGroup/fsGroup 10001), so the
# image runs the same way under plain `docker run` as in the cluster.
USER 10001:10001
