# syntax=docker/dockerfile:1
# baton-connectors: one image, both connectors; the command names the one to run.
#   docker build -t baton-connectors:0.1.0 .
#   docker run --rm baton-connectors:0.1.0 baton-confluence-datacenter --help
#   docker run --rm --init -v "$PWD:/out" -w /out baton-connectors:0.1.0 \
#       baton-atlassian --api-token "$TOKEN" --org "$ORG" -f /out/sync.c1z   (one-shot sync)
# Kubernetes: deploy/k8s (docs/operations.md).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# Build stage: a virtualenv with the pinned dependencies and the project. Wheels only
# (--only-binary), so no compiler is needed here and none can leak into the final image.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first: this layer is reused until deploy/requirements.txt changes.
COPY deploy/requirements.txt deploy/requirements.txt
RUN pip install --only-binary=:all: --requirement deploy/requirements.txt

COPY pyproject.toml README.md ./
COPY connector ./connector
# --no-deps: every dependency is already pinned above; pip check proves the set is complete.
RUN pip install --no-deps . \
    && pip check \
    && python -m compileall -q /opt/venv/lib \
    && baton-atlassian --help > /dev/null \
    && baton-confluence-datacenter --help > /dev/null

# ---------------------------------------------------------------------------------------------------
# Runtime stage: the slim base, the virtualenv, a non-root user. Nothing else.
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="baton-connectors" \
      org.opencontainers.image.description="Self-hosted ConductorOne baton connectors: baton-atlassian, baton-confluence-datacenter" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it (deploy/k8s uses 10001).
RUN groupadd --system --gid 10001 baton \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin baton \
    && install -d -o 10001 -g 10001 -m 0700 /tmp/baton

COPY --from=build /opt/venv /opt/venv

# The root filesystem is read-only in Kubernetes: bytecode was compiled at build time, and temporary
# files (the sync's working database, the c1z before upload) go to /tmp/baton, an emptyDir there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp/baton \
    BATON_C1Z_TEMP_DIR=/tmp/baton

USER 10001:10001
WORKDIR /tmp/baton

# Health checks, probes and /metrics (BATON_HEALTH_CHECK_PORT).
EXPOSE 8081

# No ENTRYPOINT wrapper: the command is the connector (baton-atlassian or baton-confluence-datacenter),
# which runs as PID 1 and handles SIGTERM itself in service mode.
CMD ["baton-atlassian", "--help"]
