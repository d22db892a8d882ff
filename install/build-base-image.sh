#!/usr/bin/env bash
# Build the local Debian bookworm + Python 3.11 base image without a registry.
#
# No container registry is reachable, so the base comes from debootstrap and
# `docker import`. Cached by tag: nothing happens when the tag already exists and was
# built from the package list below (its orchestrator.base.packages label); an image of
# ours built from another list is rebuilt, and a tag that is not ours (no
# orchestrator.base label) is left as it is.  ORCH_REBUILD_BASE=1 rebuilds anyway.  Run
# as root with the engine up (install/docker-engine.sh).
#
# Usage: install/build-base-image.sh [--platform linux/amd64|linux/arm64]
#   Another platform than the host's needs qemu-user-static with binfmt_misc registered
#   (debootstrap's second stage and the Python check run the target's binaries).
#
# Environment:
#   ORCH_BASE_IMAGE      tag to build (default orchestrator/base:bookworm; for another
#                        platform than the host's, orchestrator/base:bookworm-<arch>)
#   ORCH_DEBIAN_MIRROR   Debian mirror URL; default: taken from the host's apt sources
#   ORCH_REBUILD_BASE    1 to rebuild even when the tag exists
set -euo pipefail

HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || uname -m)"
case "$HOST_ARCH" in x86_64) HOST_ARCH=amd64 ;; aarch64) HOST_ARCH=arm64 ;; esac
ARCH="$HOST_ARCH"
if [ "${1:-}" = --platform ]; then
    case "${2:-}" in
        linux/amd64) ARCH=amd64 ;;
        linux/arm64) ARCH=arm64 ;;
        *) printf 'build-base-image: ERROR: unsupported platform %s (linux/amd64 or linux/arm64)\n' "${2:-}" >&2; exit 2 ;;
    esac
    shift 2
fi
if [ "$ARCH" = "$HOST_ARCH" ]; then
    TAG="${ORCH_BASE_IMAGE:-orchestrator/base:bookworm}"
else
    TAG="${ORCH_BASE_IMAGE:-orchestrator/base:bookworm-$ARCH}"
fi
SUITE=bookworm
# What the images built on this base need: Python 3.11 with venv/ensurepip
# (agent images install wheels into a venv from a host-built wheelhouse), TLS
# tooling, curl for health checks, iproute2 and procps for diagnostics, iptables for
# the forwarding rules of wireless vNICs (the executor runs it in the host's network
# namespace; it picks the backend, nft or legacy, that sees the engine's chains).
PACKAGES=python3,python3-venv,ca-certificates,openssl,curl,iproute2,procps,iptables

say() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "Docker engine not answering; run install/docker-engine.sh first"

label() { docker image inspect -f "{{index .Config.Labels \"$1\"}}" "$TAG" 2>/dev/null; }
if [ "${ORCH_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    if [ "$(label orchestrator.base)" != 1 ]; then
        say "$TAG present and not built here; nothing to do"
        exit 0
    fi
    if [ "$(label orchestrator.base.packages)" = "$PACKAGES" ]; then
        say "$TAG present; nothing to do"
        exit 0
    fi
    say "$TAG was built from another package list; rebuilding with $PACKAGES"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root"

# Print the URI of the first enabled apt source that serves the bookworm suite
# itself (not -updates or -security), from one-line and deb822 source files.
host_mirror() {
    local f
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            # deb [options] URI suite components...
            awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) print $i
                }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # deb822 stanzas separated by blank lines.
            awk -v suite="$SUITE" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uris != "")
                        { split(uris, u, " "); print u[1] }
                    types = ""; suites = ""; uris = ""; enabled = ""
                }
                /^#/ { next }
                /^[ \t]*$/ { flush(); next }
                {
                    key = tolower($1); sub(/:$/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                    if (key == "types") types = val
                    else if (key == "suites") suites = val
                    else if (key == "uris") uris = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                END { flush() }' "$f"
        done
    } | head -n 1
}

MIRROR="${ORCH_DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$MIRROR" ] || die "no Debian $SUITE source in the host's apt configuration; set ORCH_DEBIAN_MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap; } \
        || die "cannot install debootstrap"
fi

if [ "$ARCH" != "$HOST_ARCH" ]; then
    qemu=/proc/sys/fs/binfmt_misc/qemu-$([ "$ARCH" = arm64 ] && echo aarch64 || echo x86_64)
    [ -e "$qemu" ] || die "building for linux/$ARCH on $HOST_ARCH needs qemu-user-static with binfmt_misc ($qemu missing): apt-get install qemu-user-static binfmt-support"
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/orch-base.XXXXXX")"
cleanup() {
    # A failed debootstrap can leave proc/sys mounted inside the target.
    local m
    for m in proc sys dev/pts dev; do
        mountpoint -q "$WORK/rootfs/$m" 2>/dev/null && umount -l "$WORK/rootfs/$m" || true
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

start=$SECONDS
say "debootstrap $SUITE (minbase, $ARCH) from $MIRROR"
debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 40 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
say "debootstrap took $((SECONDS - start))s"

# Keep later package installs in derived images free of docs as well.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/01-orchestrator-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/01-orchestrator-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/lintian/* \
       "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$ROOTFS/var/log" -type f -delete
# The image must not carry this machine's identity.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/etc/hostname"

python_version="$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$python_version" = 3.11 ] || die "expected Python 3.11 in the rootfs, got $python_version"

say "importing as $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import --platform "linux/$ARCH" \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' \
    -c "LABEL orchestrator.base=1 orchestrator.base.suite=$SUITE orchestrator.base.python=$python_version orchestrator.base.packages=$PACKAGES" \
    -m "Debian $SUITE minbase with Python $python_version" \
    - "$TAG" >/dev/null
built_arch="$(docker image inspect -f '{{.Architecture}}' "$TAG")"
if [ "$built_arch" != "$ARCH" ]; then
    docker rmi "$TAG" >/dev/null 2>&1 || true
    die "the engine imported the image as $built_arch, not $ARCH: it ignores --platform (set \"experimental\": true in /etc/docker/daemon.json, or build on an $ARCH machine)"
fi
say "built $TAG in $((SECONDS - start))s, $(docker image inspect -f '{{.Size}}' "$TAG") bytes"
