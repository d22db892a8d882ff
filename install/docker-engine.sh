#!/usr/bin/env bash
# Make sure a Docker engine is installed and answering on this machine.
#
# Idempotent; run as root. Installs Debian's docker.io when dockerd is missing,
# starts dockerd in the background when `docker info` does not answer, and
# waits a bounded time for the engine. Nothing is pulled from any registry.
#
# Environment:
#   ORCH_DOCKERD_LOG             dockerd log file (default /var/log/orchestrator-dockerd.log)
#   ORCH_DOCKER_WAIT             seconds to wait for the engine (default 60)
#   ORCH_DOCKER_STORAGE_DRIVER   force a storage driver (default: engine's choice,
#                                falling back to vfs if the engine cannot start)
#   ORCH_DOCKERD_PIDFILE         dockerd pid file (default /var/run/docker.pid)
set -euo pipefail

LOG_FILE="${ORCH_DOCKERD_LOG:-/var/log/orchestrator-dockerd.log}"
WAIT_SECONDS="${ORCH_DOCKER_WAIT:-60}"
FORCED_DRIVER="${ORCH_DOCKER_STORAGE_DRIVER:-}"
PID_FILE="${ORCH_DOCKERD_PIDFILE:-/var/run/docker.pid}"

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

install_engine() {
    say "dockerd not found; installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends docker.io \
        || die "apt-get install docker.io failed"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still missing"
}

engine_answers() { docker info >/dev/null 2>&1; }

# A pid file left by a dockerd that died makes the next dockerd refuse to start.
clear_stale_pidfile() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            say "removing stale $PID_FILE"
            rm -f "$PID_FILE"
        fi
    fi
}

# Start dockerd detached from this shell (own session, output to the log) so it
# outlives the calling step. $1: storage driver, or empty for the engine default.
start_dockerd() {
    local driver="$1"
    local -a args=("--pidfile=$PID_FILE")
    [ -n "$driver" ] && args+=("--storage-driver=$driver")
    mkdir -p "$(dirname "$LOG_FILE")"
    say "starting dockerd ${driver:+(storage driver $driver) }log: $LOG_FILE"
    printf '\n=== %s dockerd %s\n' "$(date -u +%FT%TZ)" "${args[*]:-}" >>"$LOG_FILE"
    setsid nohup dockerd "${args[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
    DOCKERD_PID=$!
}

# Wait until `docker info` answers. Returns 1 on timeout or if dockerd exited.
wait_engine() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        engine_answers && return 0
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            say "dockerd (pid $DOCKERD_PID) exited"
            return 1
        fi
        sleep 0.5
    done
    say "engine did not answer within ${WAIT_SECONDS}s"
    return 1
}

stop_our_dockerd() {
    kill "$DOCKERD_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$DOCKERD_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    kill -9 "$DOCKERD_PID" 2>/dev/null || true
    clear_stale_pidfile
}

command -v dockerd >/dev/null 2>&1 || install_engine
command -v docker >/dev/null 2>&1 || die "docker CLI missing (dockerd present); install docker.io"

if engine_answers; then
    say "engine already answering (storage driver $(docker info --format '{{.Driver}}'))"
    exit 0
fi

clear_stale_pidfile
start_dockerd "$FORCED_DRIVER"
if ! wait_engine; then
    if [ -n "$FORCED_DRIVER" ]; then
        tail -n 30 "$LOG_FILE" >&2 || true
        die "dockerd failed to start; see $LOG_FILE"
    fi
    # The usual reason a stock dockerd fails on CI-like hosts is that overlay2
    # cannot mount on the backing filesystem; vfs is slow and large but works
    # everywhere.
    say "dockerd failed with the default storage driver; retrying with vfs"
    tail -n 15 "$LOG_FILE" >&2 || true
    stop_our_dockerd
    start_dockerd vfs
    wait_engine || { tail -n 30 "$LOG_FILE" >&2 || true; die "dockerd failed to start with vfs too; see $LOG_FILE"; }
fi

# dockerd only selects overlay2 after mounting a test overlay itself, so an
# engine that reports overlay2 here can mount container layers.
driver="$(docker info --format '{{.Driver}}')"
if [ "$driver" != overlay2 ]; then
    say "WARNING: storage driver is $driver, not overlay2 (builds and starts will be slower)"
fi
say "engine ready (pid $DOCKERD_PID, storage driver $driver, server $(docker version --format '{{.Server.Version}}'))"
