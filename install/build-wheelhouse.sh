#!/usr/bin/env bash
# Collect wheels for the pinned requirements into .build/wheelhouse.
#
# Build containers cannot reach the Python package index, so images install
# with `pip install --no-index --find-links` from wheels fetched here by the
# host's pip. The wheels target CPython 3.11 on glibc (manylinux) for the host
# architecture, which matches the Debian bookworm base image.
#
# Usage: install/build-wheelhouse.sh [--platform linux/amd64|linux/arm64] [requirements-file...]
#        (default: the host's platform, requirements.txt)
# Environment:
#   ORCH_WHEELHOUSE   output directory (default <repo>/.build/wheelhouse for the host's
#                     platform, <repo>/.build/wheelhouse-<arch> for another one)
#   PYTHON            host Python used to run pip (default python3)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
HOST_ARCH="$(uname -m)"
ARCH="$HOST_ARCH"

say() { printf 'build-wheelhouse: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if [ "${1:-}" = --platform ]; then
    case "${2:-}" in
        linux/amd64) ARCH=x86_64 ;;
        linux/arm64) ARCH=aarch64 ;;
        *) die "unsupported platform '${2:-}' (linux/amd64 or linux/arm64)" ;;
    esac
    shift 2
fi
# The host's own platform keeps the path the Dockerfiles copy by default.
if [ "$ARCH" = "$HOST_ARCH" ]; then
    OUT="${ORCH_WHEELHOUSE:-$REPO/.build/wheelhouse}"
else
    OUT="${ORCH_WHEELHOUSE:-$REPO/.build/wheelhouse-$ARCH}"
fi

if [ "$#" -eq 0 ]; then set -- "$REPO/requirements.txt"; fi
for req in "$@"; do [ -f "$req" ] || die "no such requirements file: $req"; done

# Skip the network round trip when the same requirement files were fetched before.
stamp="$(cat "$@" | sha256sum | cut -d' ' -f1)-$ARCH"
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ]; then
    say "wheelhouse up to date ($OUT)"
    exit 0
fi
mkdir -p "$OUT"

# Bookworm ships glibc 2.36: accept every manylinux tag up to that.
platforms=()
for minor in 36 35 34 33 32 31 30 29 28 27 26 25 24 23 22 21 20 19 18 17; do
    platforms+=(--platform "manylinux_2_${minor}_${ARCH}")
done
platforms+=(--platform "manylinux2014_${ARCH}" --platform "linux_${ARCH}")

req_args=()
for req in "$@"; do req_args+=(-r "$req"); done

say "downloading cp311 wheels into $OUT"
# --require-hashes: every wheel must match the lock's hashes (the files given must be
# hashed locks: requirements.txt, install/build-requirements.txt).
if ! "$PYTHON" -m pip download --disable-pip-version-check -q --require-hashes \
        --only-binary=:all: --implementation cp --python-version 3.11 \
        --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
        -d "$OUT" "${req_args[@]}"; then
    # Some project published no wheel for this target: let the host build it.
    # Only valid when the host itself runs CPython 3.11 on the target's architecture.
    [ "$ARCH" = "$HOST_ARCH" ] || die "a requirement has no cp311 $ARCH wheel; build the wheelhouse on an $ARCH machine"
    host_py="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ "$host_py" = 3.11 ] || die "a requirement has no cp311 wheel and host Python is $host_py, not 3.11"
    say "some requirement has no wheel for the target; building with the host pip"
    "$PYTHON" -m pip wheel --disable-pip-version-check -q --require-hashes --prefer-binary \
        -w "$OUT" "${req_args[@]}" \
        || die "pip wheel failed"
fi
printf '%s\n' "$stamp" >"$OUT/.stamp"
say "$(find "$OUT" -name '*.whl' | wc -l) wheels in $OUT"
