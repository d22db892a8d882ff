#!/bin/sh
# Entry point of the agent container: give the bus a fresh private run directory, then
# hand PID 1 to the command (supervisord by default).
#
# The run directory holds only what lives as long as one supervisord (ipc sockets, the
# control socket, the pid file); files left by a previous start of the same container
# would only confuse, so it starts empty.
set -eu
: "${ORCH_RUN_DIR:=/run/orchestrator}"
: "${ORCH_STATE_DIR:=/var/orchestrator}"
export ORCH_RUN_DIR ORCH_STATE_DIR

mkdir -p "$ORCH_STATE_DIR"
mkdir -p -m 0700 "$ORCH_RUN_DIR"
chmod 0700 "$ORCH_RUN_DIR"
find "$ORCH_RUN_DIR" -mindepth 1 -delete

exec "$@"
