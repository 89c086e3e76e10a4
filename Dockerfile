# syntax=docker/dockerfile:1
#
# exness-actors production image.
#
#   docker build -t exness-actors .
#   docker run --rm -p 8000:8000 -p 7070:7070 -v exness-data:/data exness-actors     # embedded mode
#
# The default command (`run`) is the embedded all-in-one mode: no Redis, no PostgreSQL, journal,
# snapshots and the SQLite store in /data. docker-compose.yml runs the split roles from this same
# image (`run --role engine|gateway|ws|feed|candles|persister|snapshotter`); see docs/operations.md.
#
# Secrets never enter the image: the JWT signing secret (EXNESS_AUTH__JWT_SECRET) and the snapshot
# key (EXNESS_SNAPSHOT__KEY) come from the environment at run time; without them embedded mode
# creates 0600 key files in /data on first start.

ARG PYTHON_IMAGE=python:3.11-slim

# ------------------------------------------------------------------------------------ build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes. The versions are
# the exact pins of [project] dependencies (the test/bench extras are not installed).
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

# The project itself, installed from a wheel (not editable): only what the runtime needs. The
# wheel carries config.toml and the SQL migrations as package data (setup.py copies them to
# actors/_shipped/). Prove that the installed package (python -I, run from /: not the sources in
# /src) loads its configuration and finds its migrations: a build that would start with no
# instruments or no schema fails here instead of at run time.
COPY README.md config.toml setup.py MANIFEST.in supervisor.py ./
COPY exness_actors ./exness_actors
COPY actors ./actors
COPY schemas ./schemas
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/pip check \
    && cd / \
    && /opt/venv/bin/python -I -c 'from actors.config import load_config; from actors.store.postgres import load_migrations; assert load_config()["instruments"], "no [instruments]"; assert load_migrations(), "no migrations"' \
    && /opt/venv/bin/exness-actors --help > /dev/null

# ---------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="exness-actors" \
      org.opencontainers.image.description="Leveraged crypto CFD trading platform: trio actors around a pure, deterministic, replayable core" \
      org.opencontainers.image.licenses="MIT"

# A fixed, unprivileged uid/gid: the engine and the snapshotter share the data volume, so every
# container of this image must write it as the same user.
RUN groupadd --system --gid 10001 exness \
    && useradd --system --uid 10001 --gid exness --home-dir /home/exness --create-home \
               --shell /usr/sbin/nologin exness \
    && mkdir /data \
    && chown exness:exness /data \
    && chmod 0700 /data

COPY --from=build /opt/venv /opt/venv

# Listen on every interface inside the container (the shipped config binds 127.0.0.1), keep the
# data in the volume. Anything here can be overridden with -e / compose `environment:`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXNESS_DATA__DIR=/data \
    EXNESS_HTTP__HOST=0.0.0.0 \
    EXNESS_WS__HOST=0.0.0.0

USER 10001:10001
WORKDIR /home/exness
VOLUME /data

# 8000: HTTP API (/api/v1, /docs, /healthz, /readyz, /metrics); 7070: WebSocket streams.
EXPOSE 8000 7070

# Split mode (EXNESS_ROLE names the container's role): ask that role's heartbeat; docker-compose.yml
# declares the same check per service. Embedded mode (no EXNESS_ROLE, no Redis): /healthz answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "if [ -n \"${EXNESS_ROLE:-}\" ]; then exec exness-actors health --role \"$EXNESS_ROLE\"; else exec python -c 'import os, urllib.request; urllib.request.urlopen(\"http://127.0.0.1:%s/healthz\" % os.environ.get(\"EXNESS_HTTP__PORT\", \"8000\"), timeout=4)'; fi"]

# SIGTERM (docker stop) drains the engine, flushes the journal and writes a final snapshot: give
# the container a long enough stop timeout (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["exness-actors"]
CMD ["run"]
