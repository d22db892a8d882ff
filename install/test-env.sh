#!/usr/bin/env bash
# Prepares this machine for the test suite: what the tests need beyond the virtual
# environment.  Idempotent; later steps (the Docker engine, images) are added here.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
need=()
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-env: missing ${need[*]}; run as root or install them" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
: "$top"
