#!/bin/sh
# Entry point of the agent container: give the bus a fresh private run directory, then
# hand PID 1 to the command (supervisord by default).
#
# The run directory holds only what lives as long as one supervisord (ipc sockets, the
# control socket, the pid file); files left by a previous start of the same container
# would only confuse, so it starts empty.
#
# With ORCH_AGENT_GROUP (set in the image), gateway and netbridge run as the unprivileged
# ORCH_PROGRAM_USER: the run directory becomes root's with that group (2770, so sockets
# inherit the group), the state directory is readable by the group, its logs/debug
# directories writable by it, gateway/ belongs to the user, and the mTLS material is
# copied to a directory only that user can read (the mounted files are root's).
# docs/images.md has the whole layout.
set -eu
: "${ORCH_RUN_DIR:=/run/orchestrator}"
: "${ORCH_STATE_DIR:=/var/orchestrator}"
export ORCH_RUN_DIR ORCH_STATE_DIR

mkdir -p "$ORCH_STATE_DIR"
mkdir -p -m 0700 "$ORCH_RUN_DIR"
chmod 0700 "$ORCH_RUN_DIR"
find "$ORCH_RUN_DIR" -mindepth 1 -delete

if [ -n "${ORCH_AGENT_GROUP:-}" ] && [ "$(id -u)" = 0 ]; then
  group=$ORCH_AGENT_GROUP
  user=${ORCH_PROGRAM_USER:-root}
  chown "root:$group" "$ORCH_RUN_DIR"
  chmod 2770 "$ORCH_RUN_DIR"
  chgrp "$group" "$ORCH_STATE_DIR"
  chmod 0750 "$ORCH_STATE_DIR"
  for sub in logs debug; do
    mkdir -p "$ORCH_STATE_DIR/$sub"
    chgrp "$group" "$ORCH_STATE_DIR/$sub"
    chmod 2770 "$ORCH_STATE_DIR/$sub"
    # Files of earlier starts (or of a sidecar that came first) join the group.
    find "$ORCH_STATE_DIR/$sub" -maxdepth 1 -type f -name '*.log' \
      -exec chgrp "$group" {} + -exec chmod 0660 {} +
  done
  mkdir -p "$ORCH_STATE_DIR/gateway"
  chown -R "$user:$group" "$ORCH_STATE_DIR/gateway"
  chmod 0700 "$ORCH_STATE_DIR/gateway"
  # The gateway's credentials: a private copy it owns (0700 directory, 0600 files), so
  # the key check (no group or other bits) holds for the user that reads it.
  src=${ORCH_MTLS_DIR:-$HOME/.mtls}
  dst=$ORCH_RUN_DIR/mtls
  mkdir -m 0700 "$dst"
  if [ -d "$src" ]; then
    cp -R "$src/." "$dst/"
  fi
  if [ -n "${ORCH_CA_FILE:-}" ] && [ -f "$ORCH_CA_FILE" ]; then
    cp "$ORCH_CA_FILE" "$dst/extra-ca.pem"
    export ORCH_CA_FILE="$dst/extra-ca.pem"
  fi
  chown -R "$user:$group" "$dst"
  find "$dst" -type f -exec chmod 0600 {} +
  export ORCH_MTLS_DIR="$dst"
fi

# Bus sockets and shared files must be usable by the agent group: supervisord applies its
# own `umask` setting only when it daemonizes, so under nodaemon the programs inherit this.
umask 007
# supervisord (and through supervisord.conf every program) without docstrings and asserts:
# a smaller footprint; the image holds the .opt-2.pyc files for it.  Other commands run
# in the container (orchestrator-tap, supervisorctl) keep their help texts.
case "${1##*/}" in supervisord) export PYTHONOPTIMIZE=2 ;; esac
exec "$@"
