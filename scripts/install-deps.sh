#!/usr/bin/env bash
# Installs what iotcp needs from Debian, idempotently: the C libraries it binds (RDMA verbs, rdma_cm,
# libnvme, liburing, OpenSSL for TLS) and the tools its tests and demos use (iproute2, nftables, ethtool, ping, curl,
# tshark, python3, wrk; pkg-config and gcc for libiotcp's C users; make, patch, dpkg-dev and xz-utils to build
# lighttpd on it; nginx and lighttpd as the proxy's backends). Needs root; does nothing when everything is
# already there.
set -euo pipefail
packages=(libibverbs-dev librdmacm-dev libnvme-dev liburing-dev libssl-dev openssl iproute2 nftables ethtool iputils-ping curl tshark python3 wrk pkg-config gcc make patch dpkg-dev xz-utils nginx lighttpd)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # The servers are run by the tests, in namespaces: their packages must not start them as services.
  made_policy=no
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=yes
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ "$made_policy" = yes ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ "$made_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
fi
if ! command -v swift >/dev/null; then
  for candidate in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    [ -x "$candidate/swift" ] && export PATH="$candidate:$PATH" && break
  done
fi
command -v swift >/dev/null || { echo "install-deps: no Swift toolchain (6.0 or later) on PATH" >&2; exit 1; }
