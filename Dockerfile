# syntax=docker/dockerfile:1
# The Akece Webhooks image: one image, every role (`api`, `router`, `deliver`, `topics ensure`, the
# SRE commands). Debian bookworm slim with Debian's Python 3.11, the project in a virtualenv, a
# non-root user, tini as PID 1 (SIGTERM reaches the process, which drains), a HEALTHCHECK on /healthz.
#
#   podman build --format docker -t akece-webhooks .        # or: docker build -t akece-webhooks .
#   podman run --rm --network host akece-webhooks router
#
# BASE_IMAGE: any Debian bookworm image. Python 3.11, venv and tini are installed from Debian when the
# base lacks them; deploy/container/base-image.sh builds a base that has them (for machines that
# reach Debian's mirror but no registry). PIP_CERT / PIP_INDEX_URL: a CA bundle or index for pip
# behind a proxy (mount the bundle with `--volume`, pass its path).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v tini >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv tini ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS build
ARG PIP_CERT
ARG PIP_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/akece-webhooks
# Dependencies first (their own layer, rebuilt only when pyproject.toml changes), then the project.
COPY pyproject.toml README.md ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["fast"]))' > requirements.txt \
    && /opt/akece-webhooks/bin/pip install --requirement requirements.txt
COPY services services
COPY schemas schemas
RUN /opt/akece-webhooks/bin/pip install --no-deps . \
    && /opt/akece-webhooks/bin/python -m compileall -q /opt/akece-webhooks/lib

FROM base AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="akece-webhooks" \
      org.opencontainers.image.description="Akece's webhook delivery pipeline on Apache Kafka: router, signed deliveries, retry tiers, dead letters, replay." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/akece/akece-webhooks" \
      org.opencontainers.image.documentation="https://github.com/akece/akece-webhooks/blob/main/docs/deploy.md" \
      org.opencontainers.image.vendor="Akece" \
      org.opencontainers.image.licenses="Proprietary"
RUN groupadd --system --gid 10001 akece \
    && useradd --system --uid 10001 --gid akece --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin akece
COPY --from=build /opt/akece-webhooks /opt/akece-webhooks
ENV PATH=/opt/akece-webhooks/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AKECE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9100
# Every role serves /healthz on AKECE_METRICS_PORT (200 while its workers are alive).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AKECE_METRICS_PORT', '9100'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "akece-webhooks"]
CMD ["--help"]
