#!/usr/bin/env bash
# Runs the agent suite on this machine under supervisord, in the foreground (Ctrl-C stops
# it).  With "ctl ARGS" it runs supervisorctl against that suite; with "tap ARGS" the bus
# tap.  State goes to .run/state in the checkout unless ORCH_STATE_DIR says otherwise; the
# bus lives in a private run directory under /tmp (ipc paths must stay short).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/.venv/bin:$PATH"
export ORCH_STATE_DIR=${ORCH_STATE_DIR:-$top/.run/state}
export ORCH_RUN_DIR=${ORCH_RUN_DIR:-/tmp/orchestrator-$(id -u)}
mkdir -p "$ORCH_STATE_DIR"
mkdir -p -m 0700 "$ORCH_RUN_DIR"

case "${1:-run}" in
  ctl) shift; exec supervisorctl -c "$top/supervisord.conf" "$@" ;;
  tap) shift; exec orchestrator-tap "$@" ;;
  run) ;;
  *) echo "usage: $0 [run | ctl ARGS | tap ARGS]" >&2; exit 2 ;;
esac

echo "state: $ORCH_STATE_DIR   bus: $ORCH_RUN_DIR"
echo "in another terminal:  make ctl ARGS=status   |   make tap ARGS=metrics."
exec supervisord -c "$top/supervisord.conf"
