#!/usr/bin/env bash
# Prepares this machine for the test suite: what the tests need beyond the virtual
# environment.  Idempotent, so `make test` runs it every time.
#   - iproute2 (network namespaces, veth pairs) and dnsmasq (a DHCP server in a namespace)
#   - the Docker engine (Debian's docker.io), started when it is not running
#   - the local Python base image, built without a registry (debootstrap + docker import)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "test-env: the tests need root (network namespaces, the Docker engine)" >&2
  exit 1
fi
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
"$here/docker-engine.sh"
"$here/build-base-image.sh"
