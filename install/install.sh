#!/usr/bin/env bash
# Install, upgrade or remove the orchestrator agent on this machine.
#
# Run as root on Debian, Ubuntu or Raspberry Pi OS (x86_64 or arm64):
#
#   install/install.sh [options]                  install (idempotent: a re-run changes nothing)
#   install/install.sh --upgrade [options]        new images, same identity, state and vPLCs
#   install/install.sh --uninstall [--purge] [--remove-runtimes]
#
# Steps: check the system (OS, architecture, macvlan) → Docker (installed from the
# distribution's docker.io when absent, started and enabled) → images (loaded from
# --image-dir, else pulled, else built from this checkout) → the state volume → the mTLS
# identity (enrolled once against the provisioning endpoints, kept in the volume) → the
# netmon sidecar and the agent container → wait until the agent is healthy and connected.
# Each step prints a line; a failure prints the step, the reason and what to do, removes
# what this run created, and exits non-zero.
#
# Options:
#   --cloud-url URL        the cloud the agent connects to (default https://api.getedge.me)
#   --provision-url URL    provisioning endpoints (default: the cloud URL)
#   --ca-file FILE         extra trust anchor for the provisioning server and the cloud
#   --agent-image IMAGE    agent image (default orchestrator/agent:local)
#   --netmon-image IMAGE   sidecar image (default orchestrator/netmon:local)
#   --runtime-image IMAGE  runtime image the agent creates vPLCs from (default: the agent's)
#   --agent-env KEY=VALUE  extra environment for the agent container (repeatable)
#   --image-dir DIR        load the images from saved archives (docker save) in DIR
#   --source DIR           checkout to build the images from when no registry has them
#                          (default: the checkout this script lives in, if it is one)
#   --no-build             never build images locally
#   --name-prefix PREFIX   prefix for both container names and the volume (default none)
#   --wait SECONDS         how long to wait for the agent to connect (default 180)
#   --upgrade              re-obtain the images and replace both containers
#   --uninstall            remove the agent and the sidecar (vPLCs keep running)
#   --purge                with --uninstall: also remove the state volume (identity included)
#   --remove-runtimes      with --uninstall: also remove this agent's vPLCs and networks
#
# Environment (for tests): ORCH_INSTALL_APT_GET (package installer, default apt-get),
# ORCH_INSTALL_OS_RELEASE (default /etc/os-release), ORCH_INSTALL_ASSUME_NO_MACVLAN=1
# (behave as if the kernel had no macvlan).
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLOUD_URL="${ORCH_CLOUD_URL:-https://api.getedge.me}"
PROVISION_URL=""
CA_FILE=""
AGENT_IMAGE="${ORCH_AGENT_IMAGE:-orchestrator/agent:local}"
NETMON_IMAGE="${ORCH_NETMON_IMAGE:-orchestrator/netmon:local}"
RUNTIME_IMAGE=""
IMAGE_DIR=""
SOURCE=""
BUILD=1
PREFIX=""
WAIT=180
MODE=install
PURGE=0
REMOVE_RUNTIMES=0
AGENT_ENV=()
APT_GET="${ORCH_INSTALL_APT_GET:-apt-get}"
OS_RELEASE="${ORCH_INSTALL_OS_RELEASE:-/etc/os-release}"
STATE=/var/orchestrator          # where the volume is mounted in both containers
MTLS="$STATE/mtls"               # the identity, inside the volume (0700 dir, 0600 files)

usage() { sed -n '2,/^set -Eeuo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cloud-url) CLOUD_URL="$2"; shift 2 ;;
        --provision-url) PROVISION_URL="$2"; shift 2 ;;
        --ca-file) CA_FILE="$2"; shift 2 ;;
        --agent-image) AGENT_IMAGE="$2"; shift 2 ;;
        --netmon-image) NETMON_IMAGE="$2"; shift 2 ;;
        --runtime-image) RUNTIME_IMAGE="$2"; shift 2 ;;
        --agent-env) AGENT_ENV+=("$2"); shift 2 ;;
        --image-dir) IMAGE_DIR="$2"; shift 2 ;;
        --source) SOURCE="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --name-prefix) PREFIX="$2"; shift 2 ;;
        --wait) WAIT="$2"; shift 2 ;;
        --upgrade) MODE=upgrade; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        --remove-runtimes) REMOVE_RUNTIMES=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) printf 'install: unknown option %s (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done
PROVISION_URL="${PROVISION_URL:-$CLOUD_URL}"
AGENT_NAME="${PREFIX}orchestrator_agent"
NETMON_NAME="${PREFIX}autonomy_netmon"
VOLUME="${PREFIX}orchestrator-shared"
if [ -z "$SOURCE" ] && [ -x "$here/build-images.sh" ] && [ -f "$here/../Dockerfile" ]; then
    SOURCE="$(cd "$here/.." && pwd)"
fi

# --- progress, failure and rollback -----------------------------------------------------

STEP="start"
STARTED=$SECONDS
NEW_CONTAINERS=()      # containers this run created: removed on failure
PREVIOUS=()            # "name" of containers set aside (renamed NAME.previous) for a replace
CREATED_VOLUME=0

step() { STEP="$1"; printf '==> [%3ds] %s\n' "$((SECONDS - STARTED))" "$1"; }
note() { printf '    %s\n' "$*"; }

rollback() {
    local name
    for name in "${NEW_CONTAINERS[@]}"; do
        docker rm -f "$name" >/dev/null 2>&1 && note "rolled back: removed container $name"
    done
    for name in "${PREVIOUS[@]}"; do
        if docker container inspect "$name.previous" >/dev/null 2>&1; then
            docker rename "$name.previous" "$name" >/dev/null 2>&1 \
                && docker start "$name" >/dev/null 2>&1 \
                && note "rolled back: $name runs its previous container again"
        fi
    done
    if [ "$CREATED_VOLUME" = 1 ]; then
        docker volume rm -f "$VOLUME" >/dev/null 2>&1 && note "rolled back: removed volume $VOLUME"
    fi
    return 0
}

# fail REASON HINT: report, roll back, exit 1.
fail() {
    trap - ERR
    printf 'install: FAILED at step "%s"\n  reason: %s\n  what to do: %s\n' "$STEP" "$1" "$2" >&2
    rollback
    exit 1
}
trap 'fail "command failed (exit $?): $BASH_COMMAND" "run again; if it fails the same way, report the output above"' ERR
trap 'fail "interrupted" "run the same command again"' INT TERM

# --- checks -----------------------------------------------------------------------------

check_os() {
    step "checking the system"
    [ "$(id -u)" -eq 0 ] || fail "not running as root" "run it with sudo"
    [ -r "$OS_RELEASE" ] || fail "cannot read $OS_RELEASE" "use Debian, Ubuntu or Raspberry Pi OS"
    local id like
    id="$(. "$OS_RELEASE"; printf '%s' "${ID:-}")"
    like="$(. "$OS_RELEASE"; printf '%s' "${ID_LIKE:-}")"
    case " $id $like " in
        *" debian "*|*" ubuntu "*|*" raspbian "*) ;;
        *) fail "unsupported operating system '$id'" "use Debian, Ubuntu or Raspberry Pi OS" ;;
    esac
    case "$(uname -m)" in
        x86_64|amd64|aarch64|arm64) ;;
        *) fail "unsupported architecture $(uname -m)" "use an x86_64 or arm64 (64-bit) system" ;;
    esac
    note "$id $(. "$OS_RELEASE"; printf '%s' "${VERSION_ID:-}") on $(uname -m), kernel $(uname -r)"
    macvlan_available || fail "the kernel has no macvlan support (vPLCs reach the LAN through MACVLAN networks)" \
        "use a kernel built with CONFIG_MACVLAN (the distribution's standard kernel has it), or load it: modprobe macvlan"
    note "macvlan: available"
}

# Whether a macvlan link can be made.  The probe runs entirely inside a network namespace
# this function creates (a veth pair and a macvlan on one end of it), so no interface of
# the host is ever touched; the namespace and everything in it go away with `netns del`.
macvlan_available() {
    [ "${ORCH_INSTALL_ASSUME_NO_MACVLAN:-0}" = 1 ] && return 1
    grep -qs '^macvlan ' /proc/modules && return 0
    [ -d /sys/module/macvlan ] && return 0
    command -v modprobe >/dev/null 2>&1 && modprobe -q macvlan 2>/dev/null && return 0
    command -v ip >/dev/null 2>&1 || return 1
    local ns="oat-install-$$" ok=1
    ip netns add "$ns" 2>/dev/null || return 1
    if ip -n "$ns" link add oatprobe0 type veth peer name oatprobe1 2>/dev/null \
        && ip -n "$ns" link add oatprobe2 link oatprobe0 type macvlan mode bridge 2>/dev/null; then
        ok=0
    fi
    ip netns del "$ns" 2>/dev/null || true
    return "$ok"
}

# --- Docker -----------------------------------------------------------------------------

ensure_docker() {
    step "checking Docker"
    if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
        note "Docker is not installed; installing the distribution's docker.io"
        { DEBIAN_FRONTEND=noninteractive "$APT_GET" update -q \
            && DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y -q docker.io; } >/dev/null 2>&1 \
            || fail "installing docker.io with $APT_GET failed" \
                "check the package sources and the network, then run: apt-get install docker.io"
        command -v docker >/dev/null 2>&1 \
            || fail "docker.io was installed but the docker command is missing" "run: apt-get install --reinstall docker.io"
    fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        # systemd: enable it so the engine (and with it both containers) comes back after
        # a reboot.
        systemctl enable --now docker >/dev/null 2>&1 || true
    fi
    if ! docker info >/dev/null 2>&1; then
        start_dockerd
    fi
    note "Docker $(docker version --format '{{.Server.Version}}') answering"
}

# Without systemd (containers, minimal systems): start dockerd detached from this shell.
start_dockerd() {
    local log=/var/log/orchestrator-dockerd.log i
    note "starting dockerd (log $log)"
    setsid nohup dockerd >>"$log" 2>&1 </dev/null &
    for i in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fail "the Docker engine did not start within 60 s" "see $log, fix it, and run again"
}

# --- images -----------------------------------------------------------------------------

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

obtain_images() {
    step "obtaining the images"
    if [ -n "$IMAGE_DIR" ]; then
        [ -d "$IMAGE_DIR" ] || fail "no directory $IMAGE_DIR" "pass the directory holding the saved image archives"
        local archive found=0
        for archive in "$IMAGE_DIR"/*.tar "$IMAGE_DIR"/*.tar.gz; do
            [ -f "$archive" ] || continue
            found=1
            note "loading $(basename "$archive")"
            docker load -i "$archive" >/dev/null 2>&1 \
                || fail "docker load of $archive failed" "check the archive (docker save output), then run again"
        done
        [ "$found" = 1 ] || fail "no *.tar or *.tar.gz archive in $IMAGE_DIR" "copy the saved images (docker save) into it"
        image_present "$AGENT_IMAGE" && image_present "$NETMON_IMAGE" \
            || fail "the archives in $IMAGE_DIR do not hold $AGENT_IMAGE and $NETMON_IMAGE" \
                "save both images with those tags, or pass --agent-image/--netmon-image"
        return 0
    fi
    local image missing=()
    for image in "$AGENT_IMAGE" "$NETMON_IMAGE"; do
        # A plain install uses an image already here; an upgrade asks the registry again.
        if [ "$MODE" = install ] && image_present "$image"; then
            note "$image: present"
        elif timeout 600 docker pull -q "$image" >/dev/null 2>&1; then
            note "$image: pulled"
        elif [ "$MODE" = upgrade ] && image_present "$image"; then
            note "$image: the registry did not answer; using the local image"
        else
            missing+=("$image")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$BUILD" = 1 ] || fail "cannot pull ${missing[*]}" "check the registry access, or use --image-dir for saved images"
    [ -n "$SOURCE" ] && [ -x "$SOURCE/install/build-images.sh" ] \
        || fail "cannot pull ${missing[*]} and there is no checkout to build from" \
            "run this script from a checkout of the project (or pass --source DIR), or use --image-dir"
    note "cannot pull ${missing[*]}; building both images locally from $SOURCE (several minutes the first time)"
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/orchestrator-build.XXXXXX")"
    if ! ORCH_AGENT_IMAGE="$AGENT_IMAGE" ORCH_NETMON_IMAGE="$NETMON_IMAGE" \
            "$SOURCE/install/build-images.sh" >"$log" 2>&1; then
        grep -v '^WARNING: ' "$log" | tail -n 20 >&2
        fail "building the images failed (full output: $log)" \
            "fix what the build output says; install/build-images.sh can be run alone"
    fi
    grep '^build-images: built' "$log" | sed 's/^build-images: /    /' || true
    rm -f "$log"
}

# --- the volume and the identity ----------------------------------------------------------

ensure_volume() {
    step "state volume $VOLUME"
    if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
        note "present"
    else
        docker volume create --label orchestrator.install=state "$VOLUME" >/dev/null
        CREATED_VOLUME=1
        note "created"
    fi
}

# A throwaway container of the agent image with the volume: the identity is checked and
# made with the image's own openssl and Python, so the host needs neither.
in_agent_image() {
    docker run --rm --label orchestrator.install=helper -v "$VOLUME:$STATE" \
        --entrypoint "$1" "${@:2}"
}

# Prints the agent id of a valid identity (files present, certificate current, key
# matching); exit 3 none, 4 expired, 5 key and certificate do not match.
IDENTITY_CHECK='
d='"$MTLS"'
[ -s $d/client.crt ] && [ -s $d/client.key ] || exit 3
openssl x509 -in $d/client.crt -noout -checkend 0 >/dev/null || exit 4
[ "$(openssl x509 -in $d/client.crt -noout -pubkey | openssl sha256)" = \
  "$(openssl pkey -in $d/client.key -pubout | openssl sha256)" ] || exit 5
openssl x509 -in $d/client.crt -noout -subject -nameopt multiline | sed -n "s/^ *commonName *= *//p"'

ensure_identity() {
    step "mTLS identity"
    local code=0 id
    id="$(in_agent_image sh --network none "$AGENT_IMAGE" -c "$IDENTITY_CHECK" 2>/dev/null)" || code=$?
    if [ "$code" = 0 ] && [ -n "$id" ]; then
        AGENT_ID="$id"
        note "agent $id already enrolled; keeping it"
        return 0
    fi
    case "$code" in
        4) note "the certificate has expired; enrolling again" ;;
        5) note "key and certificate do not match; enrolling again" ;;
        *) note "no identity yet; enrolling at $PROVISION_URL" ;;
    esac
    local -a ca_args=()
    if [ -n "$CA_FILE" ]; then
        [ -r "$CA_FILE" ] || fail "cannot read the CA file $CA_FILE" "pass an existing PEM file with --ca-file"
        ca_args=(-v "$(realpath "$CA_FILE"):/run/provision-ca.crt:ro")
    fi
    local out
    # Host network: the provisioning URL is resolved and reached as from this machine.
    if ! out="$(in_agent_image sh --network host "${ca_args[@]}" "$AGENT_IMAGE" -c '
            set -e
            rm -rf '"$MTLS"'.new
            python -m devcloud enroll --url "$1" --out '"$MTLS"'.new ${2:+--cacert "$2"}
            chmod 0700 '"$MTLS"'.new && chmod 0600 '"$MTLS"'.new/*
            rm -rf '"$MTLS"'.old; [ ! -e '"$MTLS"' ] || mv '"$MTLS"' '"$MTLS"'.old
            mv '"$MTLS"'.new '"$MTLS"'; rm -rf '"$MTLS"'.old' \
            enroll "$PROVISION_URL" "${CA_FILE:+/run/provision-ca.crt}" 2>&1)"; then
        fail "enrolment at $PROVISION_URL failed: $(printf '%s' "$out" | grep -v '^\s*$' | tail -n 1)" \
            "check that the provisioning URL is right and reachable from this machine (and --ca-file if it uses a private CA), then run again"
    fi
    AGENT_ID="$(in_agent_image sh --network none "$AGENT_IMAGE" -c "$IDENTITY_CHECK")" \
        || fail "the enrolment wrote no valid identity" "run again; report it if it repeats"
    note "enrolled as agent $AGENT_ID"
}

# --- the containers -----------------------------------------------------------------------

# The flags of each container, one per line with the reason next to it.
netmon_args() {
    NETMON_ARGS=(
        --restart unless-stopped          # back after a crash and after a reboot
        --network host                    # netlink shows the interfaces of the network
                                          # namespace it runs in: it must be the host's
        -v "$VOLUME:$STATE"               # netmon.sock and the logs, shared with the agent
    )
    # No capabilities beyond the default set: netmon only reads netlink (dumps and
    # multicast notifications), which needs no CAP_NET_ADMIN.
}

agent_args() {
    local ca_env=() runtime_env=() extra=() kv
    if in_agent_image sh --network none "$AGENT_IMAGE" -c "[ -s $MTLS/ca.crt ]" 2>/dev/null; then
        ca_env=(-e "ORCH_CA_FILE=$MTLS/ca.crt")      # the cloud's CA, from the enrolment
    fi
    [ -n "$RUNTIME_IMAGE" ] && runtime_env=(-e "ORCH_RUNTIME_IMAGE=$RUNTIME_IMAGE")
    for kv in "${AGENT_ENV[@]}"; do extra+=(-e "$kv"); done
    AGENT_ARGS=(
        # supervisord exits with status 0 when a program goes FATAL, so `on-failure` would
        # leave the agent down; unless-stopped restarts it (and after a reboot).
        --restart unless-stopped
        --stop-timeout 20                 # four programs, each with a 5 s stop budget
        -v /var/run/docker.sock:/var/run/docker.sock   # the executor and metrics drive
                                                       # the host's engine
        -v "$VOLUME:$STATE"               # state, logs, identity, netmon.sock
        # The host's PID namespace: on engines before API 1.44 a vNIC's MAC is set inside
        # the runtime's network namespace, entered through /proc/<pid>/ns/net; metrics
        # also finds runtime cgroups through /proc/<pid>/cgroup.
        --pid host
        --cap-add SYS_PTRACE              # open /proc/<pid>/ns/net of a runtime, whose
                                          # capabilities (SYS_NICE) are not a subset of ours
        --cap-add SYS_ADMIN               # setns() into that network namespace
        --cap-add NET_ADMIN               # set the MAC on the runtime's interface
        --security-opt apparmor=unconfined   # a dedicated NIC's runtime namespace is held
                                          # by a bind mount; docker-default forbids mount
        -v /sys/fs/cgroup:/host/cgroup:ro -e ORCH_CGROUP_ROOT=/host/cgroup   # per-runtime
                                          # usage from cgroup files, not stats streams
        -e "ORCH_CLOUD_URL=$CLOUD_URL"
        -e "ORCH_MTLS_DIR=$MTLS"
        "${ca_env[@]}"
        -e "ORCH_AGENT_CONTAINER=$AGENT_NAME"    # itself: joined to each vPLC's internal net
        -e "ORCH_SIDECAR_CONTAINER=$NETMON_NAME" # never treated as a vPLC
        "${runtime_env[@]}"
        "${extra[@]}"
    )
}

# A hash of everything a container is made from: its image id and its flags.  Kept as a
# label, so a re-run sees whether the running container is what it would make now.
config_hash() {
    local image_id="$1"; shift
    printf '%s\n' "$image_id" "$@" | sha256sum | cut -c1-16
}

# ensure_container NAME IMAGE ARGS...: keep a matching container, else replace it.
ensure_container() {
    local name="$1" image="$2"; shift 2
    local image_id hash current
    image_id="$(docker image inspect -f '{{.Id}}' "$image")"
    hash="$(config_hash "$image_id" "$@")"
    current="$(docker container inspect -f '{{index .Config.Labels "orchestrator.install.config"}}' "$name" 2>/dev/null || true)"
    if [ -n "$current" ] && [ "$current" = "$hash" ]; then
        if [ "$(docker container inspect -f '{{.State.Running}}' "$name")" = true ]; then
            note "$name: up to date, running"
        else
            docker start "$name" >/dev/null
            note "$name: up to date, started"
        fi
        return 0
    fi
    if docker container inspect "$name" >/dev/null 2>&1; then
        # Set the old one aside (stopped, renamed); removed once the new one works, put
        # back if anything fails.
        docker rm -f "$name.previous" >/dev/null 2>&1 || true
        docker stop -t 20 "$name" >/dev/null
        docker rename "$name" "$name.previous"
        PREVIOUS+=("$name")
        note "$name: replacing the previous container"
    fi
    NEW_CONTAINERS+=("$name")
    docker run -d --name "$name" --label "orchestrator.install=$name" \
        --label "orchestrator.install.config=$hash" "$@" "$image" >/dev/null
    note "$name: started from $image"
}

health() { docker container inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1" 2>/dev/null || echo gone; }

wait_ready() {
    step "waiting for the agent to be healthy and connected (up to ${WAIT}s)"
    local deadline=$((SECONDS + WAIT)) agent netmon connected=0
    while :; do
        netmon="$(health "$NETMON_NAME")"
        agent="$(health "$AGENT_NAME")"
        if [ "$connected" = 0 ] && docker logs "$AGENT_NAME" 2>&1 | grep -q "connected to .* as agent"; then
            connected=1
        fi
        if [ "$netmon" = healthy ] && [ "$agent" = healthy ] && [ "$connected" = 1 ]; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            local why="sidecar $netmon, agent $agent, cloud link $([ "$connected" = 1 ] && echo up || echo 'not up')"
            docker logs --tail 15 "$AGENT_NAME" >&2 2>&1 || true
            fail "not ready within ${WAIT}s: $why" \
                "check that $CLOUD_URL is reachable from a container (docker logs $AGENT_NAME shows why), then run again"
        fi
        sleep 1
    done
    note "sidecar healthy, agent healthy, connected as $AGENT_ID"
}

finish_replacements() {
    local name
    for name in "${PREVIOUS[@]}"; do docker rm -f "$name.previous" >/dev/null 2>&1 || true; done
    PREVIOUS=()
}

install_or_upgrade() {
    check_os
    ensure_docker
    if [ "$MODE" = upgrade ] && ! docker container inspect "$AGENT_NAME" >/dev/null 2>&1; then
        fail "no agent container $AGENT_NAME to upgrade" "install first (run without --upgrade)"
    fi
    obtain_images
    ensure_volume
    ensure_identity
    step "starting the sidecar and the agent"
    netmon_args
    ensure_container "$NETMON_NAME" "$NETMON_IMAGE" "${NETMON_ARGS[@]}"
    agent_args
    ensure_container "$AGENT_NAME" "$AGENT_IMAGE" "${AGENT_ARGS[@]}"
    wait_ready
    finish_replacements
    NEW_CONTAINERS=()
    CREATED_VOLUME=0
    step "done: agent $AGENT_ID, $MODE took $((SECONDS - STARTED))s"
    note "status: docker exec $AGENT_NAME supervisorctl status"
    note "logs:   docker logs -f $AGENT_NAME"
}

# --- uninstall ----------------------------------------------------------------------------

uninstall() {
    step "removing the agent and the sidecar"
    [ "$(id -u)" -eq 0 ] || fail "not running as root" "run it with sudo"
    docker info >/dev/null 2>&1 || fail "the Docker engine does not answer" "start it (systemctl start docker), then run again"
    if [ "$REMOVE_RUNTIMES" = 1 ]; then
        remove_runtimes
    fi
    local name
    for name in "$AGENT_NAME" "$NETMON_NAME" "$AGENT_NAME.previous" "$NETMON_NAME.previous"; do
        if docker container inspect "$name" >/dev/null 2>&1; then
            docker rm -f "$name" >/dev/null
            note "removed $name"
        fi
    done
    if [ "$PURGE" = 1 ]; then
        step "removing the state volume $VOLUME"
        docker volume rm -f "$VOLUME" >/dev/null 2>&1 && note "removed (the identity with it)" || note "no volume"
    else
        note "kept the volume $VOLUME (identity, state); --purge removes it"
    fi
    [ "$REMOVE_RUNTIMES" = 1 ] || note "vPLCs were left running; --remove-runtimes removes them"
    step "done"
}

# This agent's vPLCs and networks carry orchestrator.managed=true and its instance id,
# which the executor keeps in the volume.
remove_runtimes() {
    step "removing this agent's vPLCs and networks"
    local instance mount filters
    mount="$(docker volume inspect -f '{{.Mountpoint}}' "$VOLUME" 2>/dev/null || true)"
    instance="$(cat "$mount/instance_id" 2>/dev/null || true)"
    if [ -z "$instance" ]; then
        note "no instance id in $VOLUME: no vPLC of this agent to remove"
        return 0
    fi
    filters=(--filter label=orchestrator.managed=true --filter "label=orchestrator.instance=$instance")
    local ids
    ids="$(docker ps -aq "${filters[@]}")"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || { docker rm -f $ids >/dev/null; note "removed $(echo $ids | wc -w) vPLC(s)"; }
    ids="$(docker network ls -q "${filters[@]}")"
    # shellcheck disable=SC2086
    [ -z "$ids" ] || { docker network rm $ids >/dev/null 2>&1 || true; note "removed their networks"; }
}

case "$MODE" in
    uninstall) uninstall ;;
    *) install_or_upgrade ;;
esac
