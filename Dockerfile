# The agent image: supervisord running gateway, executor, metrics and netbridge.
#
# Built without a registry: the base is the local Debian + Python 3.11 image
# (install/build-base-image.sh) and every Python package comes from the wheelhouse in
# .build/wheelhouse (install/build-wheelhouse.sh).  install/build-images.sh does both.
# Works with the classic builder (DOCKER_BUILDKIT=0): no BuildKit-only syntax.
#
# install/install.sh runs it with the flags it needs (each one explained there and in
# docs/install.md).
ARG BASE_IMAGE=orchestrator/base:bookworm

FROM ${BASE_IMAGE} AS build
# The wheelhouse of the target platform (build-images.sh --platform sets it).
ARG WHEELHOUSE=.build/wheelhouse
# Dependencies first: this layer is reused until requirements.txt or the wheels change.
COPY ${WHEELHOUSE} /wheels
# Every wheel is checked against the lock's hashes, not only its name and version.
COPY requirements.txt /src/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-index --find-links /wheels -r /src/requirements.txt
COPY pyproject.toml requirements.in /src/
COPY common /src/common
COPY services /src/services
COPY devcloud /src/devcloud
COPY bin /src/bin
# Non-editable, no dependency resolution; pip fetches the build backend from /wheels.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /wheels --no-deps /src
# supervisord and the programs run with PYTHONOPTIMIZE=2 (supervisord.conf, the
# entrypoint): their .opt-2.pyc files are compiled here, as the unprivileged programs could
# not write them and would otherwise compile every module at each start.
RUN /opt/venv/bin/python -OO -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="orchestrator-agent" \
      org.opencontainers.image.description="Edge agent running virtual PLCs on Docker, driven from the Autonomy Edge Cloud" \
      org.opencontainers.image.version="${VERSION}" \
      orchestrator.component="agent"
COPY --from=build /opt/venv /opt/venv
# The standard library's .opt-2.pyc files too (about 12 MB; see above).
RUN python3 -OO -m compileall -q /usr/lib/python3.11 >/dev/null
# Gateway and netbridge run as this user (supervisord.conf); its group shares the bus run
# directory, logs and the netmon socket with the root programs (docs/images.md).  The ids
# are fixed because the netmon sidecar, another image, names the group by number.
RUN groupadd --system --gid 10001 orchestrator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin orchestrator
COPY supervisord.conf /etc/supervisor/supervisord.conf
COPY install/agent-entrypoint.sh /usr/local/bin/orchestrator-entrypoint
ENV ORCH_STATE_DIR=/var/orchestrator \
    ORCH_RUN_DIR=/run/orchestrator \
    ORCH_AGENT_GROUP=orchestrator \
    ORCH_PROGRAM_USER=orchestrator \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
# supervisord stops every program on SIGTERM (each has a 5 s shutdown budget); give
# `docker stop` at least 20 s (`--stop-timeout 20`) so a slow executor is not killed.
# Healthy only when every supervised program is RUNNING and each agent process has beaten
# on the bus within the last 6 s (orchestrator-health, services/tap/health.py).  Two
# failed checks in a row (about 20 s) make it unhealthy; one success makes it healthy.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=2 \
    CMD ["orchestrator-health", "--window", "6", "--timeout", "3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/orchestrator-entrypoint"]
CMD ["supervisord", "-c", "/etc/supervisor/supervisord.conf"]
