# syntax=docker/dockerfile:1
# postcanary container image: a Rust build stage and a small Debian runtime.
#
#   docker build -t postcanary .
#   docker run -d --name postcanary -p 8080:8080 \
#     -v /srv/postcanary/config:/etc/postcanary:ro \
#     -v postcanary-ledger:/var/lib/postcanary \
#     --env-file /srv/postcanary/postcanary.env postcanary
#
# Config: mount a directory over /etc/postcanary (postcanary.toml + probes/);
# the image ships the example there. Secrets: environment variables for the
# config's `env:` references, or files mounted for `file:` references. The
# health check asks /healthz on port 8080, so the config needs a [server]
# section listening on 0.0.0.0:8080 (see deploy/kubernetes/base/postcanary.toml);
# HEALTHCHECK is kept by Docker-format images (`buildah bud --format docker`).

ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin postcanary \
    && install -m 0755 target/release/postcanary /postcanary

# --- runtime (packaging CI builds this stage from the same lines with a prebuilt binary) ---
FROM ${RUNTIME_IMAGE}
RUN groupadd --gid 10001 postcanary \
    && useradd --no-log-init --uid 10001 --gid postcanary --home-dir /var/lib/postcanary \
       --no-create-home --shell /usr/sbin/nologin postcanary \
    && install -d -o postcanary -g postcanary -m 0750 /var/lib/postcanary
COPY --from=build /postcanary /usr/bin/postcanary
COPY postcanary.example.toml /etc/postcanary/postcanary.toml
COPY probes/ /etc/postcanary/probes/
COPY docs/postcanary.schema.json /usr/share/postcanary/postcanary.schema.json
ENV POSTCANARY_CONFIG=/etc/postcanary/postcanary.toml
USER 10001:10001
WORKDIR /var/lib/postcanary
VOLUME ["/var/lib/postcanary"]
EXPOSE 8080
# No curl in the image: bash's /dev/tcp sends the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/postcanary"]
CMD ["run", "--log-format", "json"]
