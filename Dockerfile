# syntax=docker/dockerfile:1
#
# The ibkr-workers image: one image, every command (`order-consumer`, `instrument-sync`, `sim-gateway`,
# `migrate`, `topics`, ...), chosen by the arguments after the image name. It carries the sim gateway (the
# ibkr-sim distribution) unless built with --build-arg WITH_SIM=no:
#
#   docker build -t ibkr-workers .
#   docker run --rm ibkr-workers --help
#   docker run --rm -e DATABASE_URL=... ibkr-workers migrate
#
# Two stages. The builder installs every dependency from requirements/image.lock with
# `pip --require-hashes` (each file checked against the sha256 recorded for it; a file PyPI serves
# differently, or a dependency missing from the lock, fails the build), builds the project's wheels with a
# build backend installed the same way from requirements/build.lock, and installs them into a virtual
# environment at /opt/venv. The final stage is the same slim Python base with only that virtual
# environment and the event schemas copied in: no compiler, no pip cache, no source tree, no build
# backend, and it runs as an unprivileged user (uid/gid 10001). scripts/lock writes both locks.
#
# The base is pinned by tag; pin it by digest too (--build-arg BASE_DIGEST=@sha256:... with the digest
# your registry reports for python:<version>-slim-<release>). PYTHON_VERSION=3.11 reproduces the
# interpreter CI runs the tests on; every locked dependency ships binary wheels for 3.11, 3.12 and 3.13
# (x86_64 and aarch64), so neither stage compiles.

ARG PYTHON_VERSION=3.12
ARG DEBIAN_RELEASE=bookworm
# Empty, or "@sha256:<digest>" of the base image (the same for both stages).
ARG BASE_DIGEST=

# ---------------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}${BASE_DIGEST} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The dependencies first, in their own layer: it is rebuilt only when the lock changes, not on every code
# change. Binary wheels only, each checked against its hash.
COPY requirements/image.lock requirements/build.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r image.lock \
 && python -m venv /tmp/build \
 && /tmp/build/bin/pip install --require-hashes --only-binary=:all: -r build.lock

# Then the project itself, as wheels (a regular, non-editable install: the source tree stays behind): the
# workers, and the sim gateway (its own distribution, ibkr-sim), which `sim-gateway`, `demo` and the compose
# stack run. WITH_SIM=no builds an image without it, where those two commands say what to install. The
# wheels are built with the locked backend (no build isolation, which would fetch one unchecked), and
# installed without dependencies: the lock brought them all, which `pip check` confirms.
ARG WITH_SIM=yes
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY ibkr_sim ./ibkr_sim
RUN /tmp/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
 && if [ "$WITH_SIM" = yes ]; then /tmp/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels ./ibkr_sim; fi \
 && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
 && /opt/venv/bin/pip check

# The event schemas. The codec looks for them at Path(workers.__file__).parent.parent / "schemas", which in
# an installed (non-editable) package is site-packages/schemas: put them exactly there.
COPY schemas /tmp/schemas
RUN site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && cp -r /tmp/schemas "$site/schemas" \
 && /opt/venv/bin/python -c 'from workers.adapters.avro import SchemaCatalog; c = SchemaCatalog(); print(c.directory, len(c.records()), "records")' \
 && /opt/venv/bin/ibkr-workers --version \
 && if [ "$WITH_SIM" = yes ]; then /opt/venv/bin/ibkr-sim --help > /dev/null; fi

# ---------------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}${BASE_DIGEST} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ibkr-workers" \
      org.opencontainers.image.description="Kafka-to-Interactive-Brokers execution bridge: order-consumer, instrument-sync, sim gateway" \
      org.opencontainers.image.version="${VERSION}"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 ibkr \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/ibkr --create-home --shell /usr/sbin/nologin ibkr

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTH_PORT=8080

USER 10001:10001
WORKDIR /home/ibkr

# The workers' probe port (/healthz, /readyz, /metrics, POST /kill-switch); the sim gateway listens on 4002.
EXPOSE 8080 4002

# Liveness of the workers that serve HEALTH_PORT (order-consumer, instrument-sync). Commands without a
# probe port (sim-gateway, migrate, topics) get their own check, or none, from docker-compose.kafka.yml;
# Kubernetes ignores HEALTHCHECK and uses the chart's probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', '8080'), timeout=4)"]

# SIGTERM is the graceful stop of every long-running command (each installs its own handler), so the
# process runs as PID 1 directly; `docker run --init` adds a reaper if ever needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ibkr-workers"]
CMD ["--help"]
