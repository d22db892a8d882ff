#!/usr/bin/env bash
# Build the agent and netmon images locally, without a registry.
#
#   1. the base image (install/build-base-image.sh; nothing to do when its tag exists and
#      is up to date),
#   2. the wheelhouse (install/build-wheelhouse.sh; skipped when up to date),
#   3. both images with the classic builder (this engine's CLI has no buildx), from one
#      build context whose .dockerignore is an allow-list.
# Idempotent: a second run changes nothing and reuses the layer cache.  Prints each
# image's tag, size and build time on stderr.
#
# Usage: install/build-images.sh [--platform linux/amd64|linux/arm64]
#   Default: the host's platform.  For another one, the tags get a -<arch> suffix, the
#   wheelhouse is .build/wheelhouse-<arch>, and the engine must run the target's binaries
#   (qemu-user-static + binfmt_misc) and honour --platform (docs/images.md).
#
# Environment:
#   ORCH_BASE_IMAGE    base tag (default orchestrator/base:bookworm[-<arch>])
#   ORCH_AGENT_IMAGE   agent tag (default orchestrator/agent:local[-<arch>])
#   ORCH_NETMON_IMAGE  netmon tag (default orchestrator/netmon:local[-<arch>])
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$here/.." && pwd)"

say() { printf 'build-images: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

host_platform() {
    case "$(uname -m)" in x86_64) echo linux/amd64 ;; aarch64) echo linux/arm64 ;; *) echo "linux/$(uname -m)" ;; esac
}
PLATFORM="$(host_platform)"
if [ "${1:-}" = --platform ]; then
    PLATFORM="${2:-}"
    case "$PLATFORM" in linux/amd64|linux/arm64) ;; *) die "unsupported platform '$PLATFORM' (linux/amd64 or linux/arm64)" ;; esac
    shift 2
fi
SUFFIX=""
WHEELHOUSE=.build/wheelhouse
platform_args=()
if [ "$PLATFORM" != "$(host_platform)" ]; then
    arch="${PLATFORM#linux/}"
    SUFFIX="-$arch"
    WHEELHOUSE=".build/wheelhouse-$([ "$arch" = arm64 ] && echo aarch64 || echo x86_64)"
    platform_args=(--platform "$PLATFORM")
fi
BASE="${ORCH_BASE_IMAGE:-orchestrator/base:bookworm$SUFFIX}"
AGENT="${ORCH_AGENT_IMAGE:-orchestrator/agent:local$SUFFIX}"
NETMON="${ORCH_NETMON_IMAGE:-orchestrator/netmon:local$SUFFIX}"

docker info >/dev/null 2>&1 || die "Docker engine not answering; run install/docker-engine.sh first"

ORCH_BASE_IMAGE="$BASE" "$here/build-base-image.sh" --platform "$PLATFORM"
ORCH_WHEELHOUSE="$REPO/$WHEELHOUSE" "$here/build-wheelhouse.sh" --platform "$PLATFORM" \
    "$REPO/requirements.txt" "$here/build-requirements.txt"

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/common/version.py")"
[ -n "$version" ] || die "cannot read the version from common/version.py"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

build() {
    local dockerfile="$1" tag="$2" start=$SECONDS
    say "building $tag from $dockerfile"
    # Classic builder; --force-rm so a failed step leaves no container behind.
    # The output is shown only when the build fails (it also carries the classic
    # builder's deprecation notice, which is noise here).
    if ! DOCKER_BUILDKIT=0 docker build --force-rm --pull=false "${platform_args[@]}" \
            --build-arg "BASE_IMAGE=$BASE" --build-arg "VERSION=$version" \
            --build-arg "WHEELHOUSE=$WHEELHOUSE" \
            -f "$REPO/$dockerfile" -t "$tag" "$REPO" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "building $tag failed"
    fi
    local built
    built="linux/$(docker image inspect -f '{{.Architecture}}' "$tag")"
    [ "$built" = "$PLATFORM" ] || die "$tag came out as $built, not $PLATFORM: the engine ignores --platform (docs/images.md)"
    say "built $tag in $((SECONDS - start))s, $(docker image inspect -f '{{.Size}}' "$tag") bytes"
}

build Dockerfile "$AGENT"
build Dockerfile.netmon "$NETMON"
# Replaced builds leave untagged images behind; remove those of ours only.
docker image prune -f --filter "label=orchestrator.component" >/dev/null || true
