#!/usr/bin/env bash
# Runs the whole agent on this machine: a development cloud in the background (loopback,
# fixed ports) and the agent suite under supervisord in the foreground, linked over mTLS.
# Ctrl-C stops the suite; the cloud stops with it.
#
#   install/run-local.sh [run]          the main job (what `make run` calls)
#   install/run-local.sh ctl ARGS       supervisorctl against that suite
#   install/run-local.sh tap ARGS       the bus tap
#   install/run-local.sh cloud ARGS     the development cloud's CLI, e.g.
#                                         cloud agents
#                                         cloud send <AGENT> get_host_interfaces '{}'
#                                         cloud watch <AGENT> --count 3
#
# Runtimes: unless ORCH_RUNTIME_IMAGE is set, vPLCs come from the local stand-in image
# (orchestrator/openplc-standin:test, built from tests/standin like the tests build it), so
# the printed create works without a registry.  As root it also sets up a demo LAN for
# vNICs: veth `oatdemo0` (host end, a MACVLAN parent, no address) whose peer sits in the
# network namespace `oatdemo` with 192.0.2.1/24 (a documentation subnet); both are
# removed on exit.  No interface of the host is touched.
#
# State goes to .run/ in the checkout: .run/state (agent state), .run/devcloud (the cloud's
# CA and registry), .run/mtls (the agent's enrolled credentials, made once).  The bus lives
# in a private run directory: $XDG_RUNTIME_DIR/orchestrator, else /tmp/orchestrator-<uid>
# (ipc paths must stay short), refused when another user owns it or it is open to others.
# ORCH_DEVCLOUD_DIR, ORCH_DEVCLOUD_MTLS_DIR and ORCH_DEVCLOUD_{PORT,PROVISION_PORT,ADMIN_PORT}
# move these (tests run a second one next to a developer's).  With ORCH_CLOUD_URL
# already set, no development cloud is started and the agent uses that cloud, with
# ORCH_MTLS_DIR and ORCH_CA_FILE as given.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/.venv/bin:$PATH"
export ORCH_STATE_DIR=${ORCH_STATE_DIR:-$top/.run/state}
# supervisord.conf runs gateway and netbridge as this user (unprivileged in the image).
export ORCH_PROGRAM_USER=${ORCH_PROGRAM_USER:-$(id -un)}
# The bus: $XDG_RUNTIME_DIR (private to the user by design) when there is one, else a
# directory under /tmp that is refused at start-up if another user created it first.
if [ -z "${ORCH_RUN_DIR:-}" ] && [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -d "$XDG_RUNTIME_DIR" ]; then
  ORCH_RUN_DIR=$XDG_RUNTIME_DIR/orchestrator
fi
export ORCH_RUN_DIR=${ORCH_RUN_DIR:-/tmp/orchestrator-$(id -u)}
cloud_dir=${ORCH_DEVCLOUD_DIR:-$top/.run/devcloud}
cloud_port=${ORCH_DEVCLOUD_PORT:-3001}
provision_port=${ORCH_DEVCLOUD_PROVISION_PORT:-3000}
admin_port=${ORCH_DEVCLOUD_ADMIN_PORT:-3002}
mtls_dir=${ORCH_DEVCLOUD_MTLS_DIR:-$top/.run/mtls}

cloud_cli() {
  local sub=${1:-}
  [ -n "$sub" ] || { orchestrator-devcloud --help; return 2; }
  shift
  case "$sub" in
    agents|send|watch|acks) orchestrator-devcloud "$sub" --dir "$cloud_dir" "$@" ;;
    *) orchestrator-devcloud "$sub" "$@" ;;
  esac
}

case "${1:-run}" in
  ctl) shift; exec supervisorctl -c "$top/supervisord.conf" "$@" ;;
  tap) shift; exec orchestrator-tap "$@" ;;
  cloud) shift; cloud_cli "$@"; exit $? ;;
  run) ;;
  *) echo "usage: $0 [run | ctl ARGS | tap ARGS | cloud ARGS]" >&2; exit 2 ;;
esac

# Created when missing; refused (never repaired) when owned by someone else or open to
# others: supervisord and the bus put their sockets there.
python -m common.dirs state "$ORCH_STATE_DIR"
python -m common.dirs run "$ORCH_RUN_DIR"

cloud_pid=
netmon_pid=
demo_lan=
DEMO_PARENT=oatdemo0
DEMO_NS=oatdemo
remove_demo_lan() {
  ip link del "$DEMO_PARENT" 2>/dev/null || true
  ip netns del "$DEMO_NS" 2>/dev/null || true
}
# The demo LAN: only a veth pair and a namespace of our own names.
make_demo_lan() {
  remove_demo_lan  # what an interrupted earlier run may have left
  ip netns add "$DEMO_NS" &&
    ip link add "$DEMO_PARENT" type veth peer name "${DEMO_PARENT}p" &&
    ip link set "${DEMO_PARENT}p" netns "$DEMO_NS" &&
    ip -n "$DEMO_NS" link set lo up &&
    ip -n "$DEMO_NS" addr add 192.0.2.1/24 dev "${DEMO_PARENT}p" &&
    ip -n "$DEMO_NS" link set "${DEMO_PARENT}p" up &&
    ip link set "$DEMO_PARENT" up
}
stop_background() {
  if [ -n "$demo_lan" ]; then
    remove_demo_lan
    echo "demo LAN removed"
  fi
  if [ -n "$netmon_pid" ] && kill -0 "$netmon_pid" 2>/dev/null; then
    kill -TERM "$netmon_pid" 2>/dev/null || true
    wait "$netmon_pid" 2>/dev/null || true
  fi
  if [ -n "$cloud_pid" ] && kill -0 "$cloud_pid" 2>/dev/null; then
    kill -TERM "$cloud_pid" 2>/dev/null || true
    wait "$cloud_pid" 2>/dev/null || true
    echo "development cloud stopped"
  fi
}
trap stop_background EXIT

# Waits until the cloud we started has written its addresses (run.json carries its pid).
wait_cloud() {
  local i
  for i in $(seq 1 150); do
    if ! kill -0 "$cloud_pid" 2>/dev/null; then
      echo "the development cloud did not start:" >&2
      tail -n 20 "$cloud_dir/serve.log" >&2
      return 1
    fi
    if grep -qs "\"pid\": $cloud_pid," "$cloud_dir/run.json"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the development cloud did not come up within 15 s; see $cloud_dir/serve.log" >&2
  return 1
}

agent_id=
if [ -z "${ORCH_CLOUD_URL:-}" ]; then
  mkdir -p "$cloud_dir"
  orchestrator-devcloud init --dir "$cloud_dir" >/dev/null
  orchestrator-devcloud serve --dir "$cloud_dir" --host 127.0.0.1 --port "$cloud_port" \
    --provision-port "$provision_port" --admin-port "$admin_port" \
    >"$cloud_dir/serve.log" 2>&1 &
  cloud_pid=$!
  wait_cloud
  if [ ! -s "$mtls_dir/client.crt" ] || [ ! -s "$mtls_dir/client.key" ]; then
    orchestrator-devcloud enroll --url "https://127.0.0.1:$provision_port" --out "$mtls_dir" \
      --cacert "$cloud_dir/pki/ca.crt" >/dev/null
  fi
  export ORCH_CLOUD_URL="https://127.0.0.1:$cloud_port"
  export ORCH_MTLS_DIR="$mtls_dir"
  export ORCH_CA_FILE="$mtls_dir/ca.crt"
  agent_id=$(openssl x509 -in "$mtls_dir/client.crt" -noout -subject -nameopt multiline \
    | sed -n 's/^ *commonName *= *//p')
fi

# The network monitor: a sidecar container in production, a background process here.  It
# only reads the host's interfaces through netlink.
if [ -S "$ORCH_STATE_DIR/netmon.sock" ] && orchestrator-netmon --check >/dev/null 2>&1; then
  echo "a network monitor already serves $ORCH_STATE_DIR/netmon.sock"
else
  orchestrator-netmon >"$ORCH_STATE_DIR/netmon.out" 2>&1 &
  netmon_pid=$!
fi
runtime_version=latest
if ! docker info >/dev/null 2>&1; then
  echo "note: no Docker engine answers; runtime commands will report Docker unavailable" \
       "(as root, install/docker-engine.sh installs and starts one)"
elif [ -z "${ORCH_RUNTIME_IMAGE:-}" ]; then
  echo "building the runtime stand-in image (once; tests/standin)..."
  if standin=$(cd "$top" && python -c 'from testkit import dockerenv; print(dockerenv.ensure_standin_image())'); then
    export ORCH_RUNTIME_IMAGE=${standin%:*}
    export ORCH_PULL_POLICY=${ORCH_PULL_POLICY:-missing}
    runtime_version=${standin##*:}
  else
    echo "note: the stand-in image could not be built; runtimes use $ORCH_RUNTIME_IMAGE" >&2
  fi
fi
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  if make_demo_lan; then
    demo_lan=1
  else
    remove_demo_lan
    echo "note: the demo LAN could not be set up; creates with a vNIC need a LAN of your own" >&2
  fi
fi

echo "state: $ORCH_STATE_DIR   bus: $ORCH_RUN_DIR   cloud: $ORCH_CLOUD_URL"
echo "in another terminal:  make ctl ARGS=status   |   make tap ARGS=metrics."
if [ -n "$agent_id" ]; then
  echo "development cloud (log $cloud_dir/serve.log), agent $agent_id:"
  echo "  install/run-local.sh cloud agents"
  echo "  install/run-local.sh cloud send $agent_id get_host_interfaces '{}'"
  echo "  install/run-local.sh cloud send $agent_id get_consumption_orchestrator '{}'"
  echo "  install/run-local.sh cloud watch $agent_id --count 3"
  if [ -n "$demo_lan" ]; then
    vnic='{"name":"eth0","parent_interface":"'$DEMO_PARENT'","network_mode":"manual","ip_address":"192.0.2.50","subnet":"255.255.255.0","gateway":"192.0.2.1"}'
    echo "a vPLC on the demo LAN ($DEMO_PARENT, 192.0.2.0/24; its other end is namespace $DEMO_NS):"
    echo "  install/run-local.sh cloud send $agent_id create_new_runtime '{\"container_name\":\"plc-1\",\"runtime_version\":\"$runtime_version\",\"vnic_configs\":[$vnic]}'"
  else
    echo "a create needs a vNIC on a LAN: run as root for the demo LAN (oatdemo0), or name"
    echo "an interface of your own as parent_interface:"
    echo "  install/run-local.sh cloud send $agent_id create_new_runtime '{\"container_name\":\"plc-1\",\"runtime_version\":\"$runtime_version\",\"vnic_configs\":[{\"name\":\"eth0\",\"parent_interface\":\"<IFACE>\",\"network_mode\":\"dhcp\"}]}'"
  fi
  echo "  install/run-local.sh cloud send $agent_id get_device_status '{\"device_id\":\"plc-1\"}'"
  echo "  install/run-local.sh cloud send $agent_id run_command '{\"device_id\":\"plc-1\",\"method\":\"GET\",\"api\":\"/api/version\"}'"
  [ -z "$demo_lan" ] || echo "  ip netns exec $DEMO_NS ping -c 2 192.0.2.50"
  echo "  install/run-local.sh cloud send $agent_id delete_device '{\"device_id\":\"plc-1\"}'"
fi

# As in the image: supervisord and its programs run with PYTHONOPTIMIZE=2 (supervisord.conf).
PYTHONOPTIMIZE=2 supervisord -c "$top/supervisord.conf" &
sup_pid=$!
trap 'kill -TERM "$sup_pid" 2>/dev/null || true' INT TERM
# A trapped signal interrupts the first wait; the second waits for supervisord to finish.
status=0
wait "$sup_pid" || status=$?
if kill -0 "$sup_pid" 2>/dev/null; then
  status=0
  wait "$sup_pid" || status=$?
fi
exit "$status"
