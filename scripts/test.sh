#!/usr/bin/env bash
# Runs every test: unit, property and simulation tests, the two-process channel tests, a real Linux peer
# over a TAP, a fresh capture of real Linux frames checked byte for byte, the end-to-end curl checks
# against iotcp-fileserver (over IPv4, then over IPv6), the same over HTTPS with the records sealed on the NIC (scripts/tls-e2e.sh), SYN
# cookies on the NIC under a SYN flood (scripts/accel-e2e.sh), connection splicing through iotcp-proxy
# (scripts/proxy-e2e.sh), each of those three over IPv4 and again over IPv6, a package of its own using iotcp as a library (scripts/downstream.sh), a C
# program on libiotcp (scripts/c-tests.sh), Debian's lighttpd patched onto iotcp (scripts/lighttpd-e2e.sh), a soak with misbehaving clients (scripts/soak.sh), the RDMA
# testbed VM (scripts/rdma-vm.sh) (those ten need root, as CI has), and the libFuzzer targets for a
# bounded time.
#
# Every stage must report at least the checks it is known to have: a stage that ran nothing, or fewer
# checks than it should, fails the run as loudly as a failing check. Without root the root-only stages
# cannot run: that is a failure too, unless IOTCP_PARTIAL=1 asks for the rest only (and says so).
#
# Usage: scripts/test.sh            FUZZ_SECONDS=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
fuzz_seconds=${FUZZ_SECONDS:-30}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

root=yes
if [ "$(id -u)" -ne 0 ]; then
  if [ "${IOTCP_PARTIAL:-0}" != 1 ]; then
    echo "test: the TAP, namespace, capture, end-to-end and VM stages need root; run as root (or IOTCP_PARTIAL=1 for the rest)" >&2
    exit 1
  fi
  root=no
  echo "test: NOT root: skipping the live capture, end-to-end and RDMA VM stages (IOTCP_PARTIAL=1)" >&2
fi

# require STAGE COUNT MINIMUM: a stage must have run at least MINIMUM checks.
require() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ]; then
    echo "test: $1 reported ${2:-no} checks, fewer than the $3 it has: something did not run" >&2
    exit 1
  fi
}

echo "== build"
swift build --build-tests 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]" || true
swift build --build-tests >/dev/null 2>&1 || { swift build --build-tests; exit 1; }

echo "== swift test"
swift test --skip-build 2>&1 | tee "$log" | grep -E "^✘|Test run with" || true
grep -qE "^✔ Test run with [0-9]+ tests? .*passed" "$log" || { echo "swift test failed" >&2; tail -50 "$log" >&2; exit 1; }
unit=$(grep -oE "Test run with [0-9]+ tests" "$log" | grep -oE "[0-9]+" | tail -1)
require "swift test" "$unit" 400

# suite LABEL MINIMUM TAG SHOWN COMMAND...: runs one end-to-end suite, whose last line is "TAG: N passed, M
# failed", showing the lines that match SHOWN; fails the run unless it passed with at least MINIMUM checks; adds
# its checks to the total and says how long it took.
total=$unit
suite() {
  local label=$1 minimum=$2 tag=$3 shown=$4 started=$SECONDS count
  shift 4
  "$@" | tee "$log" | grep -E "$shown" || true
  if ! grep -qE "^$tag: [0-9]+ passed, 0 failed" "$log"; then
    echo "test: $label failed:" >&2
    grep -E "FAIL|did not start" "$log" >&2 || tail -30 "$log" >&2
    exit 1
  fi
  count=$(sed -nE "s/^$tag: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "$label" "$count" "$minimum"
  total=$((total + count))
  echo "   ($label: $((SECONDS - started)) s)"
}

if [ "$root" = yes ]; then
  echo "== a fresh capture of Linux TCP, checked like the committed one"
  scripts/capture-fixtures.sh .build/live-capture.pcap
  IOTCP_CAPTURE=.build/live-capture.pcap swift test --skip-build --filter RealFrameTests 2>&1 | tee "$log" | grep -E "✘|Test run with" || true
  grep -qE "^✔ Test run with [0-9]+ tests? .*passed" "$log" || { echo "live capture check failed" >&2; tail -50 "$log" >&2; exit 1; }
  live=$(grep -oE "Test run with [0-9]+ tests" "$log" | grep -oE "[0-9]+" | tail -1)
  require "the live capture check" "$live" 5
  total=$((total + live))

  echo "== end to end: iotcp-fileserver over a TAP, curl in a network namespace"
  suite "e2e" 115 e2e "^e2e: (FAIL|[0-9]+ passed)|^e2e: wrk" scripts/e2e.sh .build/debug/iotcp-fileserver
  echo "== end to end over IPv6: the same checks, every client over IPv6 (embedded and split)"
  suite "e2e over IPv6" 120 e2e "^e2e: (FAIL|[0-9]+ passed)|^e2e: wrk" env E2E_FAMILY=ipv6 scripts/e2e.sh .build/debug/iotcp-fileserver

  echo "== HTTPS: iotcp-fileserver with TLS, file records sealed on the NIC; curl, openssl s_client, wrk, loss"
  suite "HTTPS" 75 tls "^tls: (FAIL|[0-9]+ passed)|^tls: wrk" scripts/tls-e2e.sh .build/debug/iotcp-fileserver
  echo "== HTTPS over IPv6: the same checks, the server on an IPv6 address alone"
  suite "HTTPS over IPv6" 75 tls "^tls: (FAIL|[0-9]+ passed)|^tls: wrk" env TLS_FAMILY=ipv6 scripts/tls-e2e.sh .build/debug/iotcp-fileserver

  echo "== AccelTCP offloads: SYN cookies on the NIC under a SYN flood, cookie edge cases with Linux clients"
  suite "AccelTCP offloads" 43 accel "^accel: (FAIL|[0-9]+ passed)|^accel: [a-z]+: sent" scripts/accel-e2e.sh .build/debug/iotcp-fileserver
  echo "== AccelTCP offloads over IPv6: the same checks, the server on an IPv6 address alone"
  suite "AccelTCP offloads over IPv6" 43 accel "^accel: (FAIL|[0-9]+ passed)|^accel: [a-z]+: sent" \
    env ACCEL_FAMILY=ipv6 scripts/accel-e2e.sh .build/debug/iotcp-fileserver

  echo "== splicing: iotcp-proxy in front of nginx and lighttpd, 0 B-200 MiB, loss, resets, a vanishing client, tshark"
  suite "splicing" 44 proxy "^proxy: (FAIL|[0-9]+ passed)" scripts/proxy-e2e.sh .build/debug/iotcp-proxy
  echo "== splicing over IPv6: the same checks, client, proxy and backends on IPv6 addresses (SPLICE6)"
  suite "splicing over IPv6" 44 proxy "^proxy: (FAIL|[0-9]+ passed)" env PROXY_FAMILY=ipv6 scripts/proxy-e2e.sh .build/debug/iotcp-proxy

  echo "== iotcp as a library: a package of its own depending on it by path, built and serving"
  suite "the downstream package" 7 downstream "^downstream:" scripts/downstream.sh

  echo "== libiotcp from C: installed with pkg-config, a C server on it, curl downloads, every error path"
  suite "the C library" 109 c-tests "^c-tests:" scripts/c-tests.sh

  echo "== lighttpd on iotcp: Debian's lighttpd 1.4.69 patched, embedded and split, curl and wrk"
  suite "lighttpd on iotcp" 77 lighttpd "^lighttpd: (FAIL|[0-9]+ passed)|wrk: .*(requests in|Socket errors|Non-2xx)" \
    scripts/lighttpd-e2e.sh .build/debug/iotcp-nic
  echo "== lighttpd on iotcp over IPv6: the same checks, every client over IPv6 (the stack given both families)"
  suite "lighttpd on iotcp over IPv6" 77 lighttpd "^lighttpd: (FAIL|[0-9]+ passed)|wrk: .*(requests in|Socket errors|Non-2xx)" \
    env LIGHTTPD_FAMILY=ipv6 scripts/lighttpd-e2e.sh .build/debug/iotcp-nic

  echo "== soak: minutes of lossy mixed traffic with aborting, stalling and vanishing clients, then nothing left"
  suite "the soak" 19 soak "^soak: (FAIL|[0-9]+ passed|[0-9]+ \(IPv4\)|back to idle)" env SOAK_SECONDS="${SOAK_SECONDS:-60}" scripts/soak.sh .build/debug

  echo "== RDMA testbed: a VM with Soft-RoCE and an NVMe disk, iotcp split across RDMA"
  suite "the RDMA VM" 32 vm "^vm: (FAIL|diag|[0-9]+ passed)|^rdma-vm:" scripts/rdma-vm.sh .build/debug
fi

echo "== fuzz (${fuzz_seconds}s per target)"
scripts/fuzz.sh "$fuzz_seconds" | tee "$log"
fuzz=$(sed -nE "s/^fuzz: ([0-9]+) targets passed/\1/p" "$log" | tail -1)
require "fuzz" "$fuzz" 4
total=$((total + fuzz))

skipped=""
[ "$root" = no ] && skipped=" (root-only stages NOT run)"
echo "iotcp: $total passed, 0 failed$skipped"
