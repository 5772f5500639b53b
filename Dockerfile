# syntax=docker/dockerfile:1
# baton-connectors: one image per connector, each a build target whose entrypoint is that connector, so
# the ConductorOne set-up guides' manifests (no command, no args, settings from the environment) run as is.
#   docker build --target baton-atlassian -t baton-atlassian:0.1.0 .
#   docker build --target baton-confluence-datacenter -t baton-confluence-datacenter:0.1.0 .
#   docker run --rm baton-atlassian:0.1.0 --help
#   docker run --rm --init -v "$PWD:/out" -w /out baton-atlassian:0.1.0 \
#       --api-token "$TOKEN" --org "$ORG" -f /out/sync.c1z   (one-shot sync)
# Kubernetes: deploy/k8s (docs/operations.md).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# Build stage: a virtualenv with the locked dependencies and the project's wheel. Wheels only
# (--only-binary), so no compiler is needed here and none can leak into the final image; every file
# pip downloads must match a hash in the lock (--require-hashes).
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Dependencies first: this layer is reused until the locks change.
COPY deploy/requirements.txt deploy/build-requirements.txt deploy/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: --requirement deploy/requirements.txt \
    && python -m venv /opt/buildtools \
    && /opt/buildtools/bin/pip install --require-hashes --only-binary=:all: \
       --requirement deploy/build-requirements.txt

COPY pyproject.toml setup.py README.md ./
COPY connector ./connector
# The wheel is built with the locked build tools (no isolated build fetching unpinned ones) and leaves out
# the sandboxes, the demo and the test connector (setup.py); --no-deps: every dependency is installed
# above, and pip check proves the set is complete.
RUN /opt/buildtools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/baton-atlassian --help > /dev/null \
    && /opt/venv/bin/baton-confluence-datacenter --help > /dev/null \
    && /opt/venv/bin/baton-atlassian health-check --help > /dev/null

# ---------------------------------------------------------------------------------------------------
# Runtime base shared by both targets: the slim base, the virtualenv, a non-root user. Nothing else.
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.description="Self-hosted ConductorOne baton connector" \
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

# ---------------------------------------------------------------------------------------------------
# One target per connector. The entrypoint is the connector itself in exec form: it runs as PID 1, starts
# the service-mode daemon from BATON_* variables when given no arguments, and handles SIGTERM itself.
# Arguments after the image name go to it (`--help`, `health-check --endpoint=ready`, one-shot flags).
FROM runtime AS baton-confluence-datacenter
LABEL org.opencontainers.image.title="baton-confluence-datacenter"
ENTRYPOINT ["baton-confluence-datacenter"]

# Last, so a build without --target gives this one.
FROM runtime AS baton-atlassian
LABEL org.opencontainers.image.title="baton-atlassian"
ENTRYPOINT ["baton-atlassian"]
