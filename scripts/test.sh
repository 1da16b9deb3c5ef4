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
require "swift test" "$unit" 338

live=0 e2e=0 e2e6=0 tls=0 tls6=0 accel=0 accel6=0 proxy=0 proxy6=0 downstream=0 ctests=0 lighttpd=0 lighttpd6=0 soak=0 vm=0
if [ "$root" = yes ]; then
  echo "== a fresh capture of Linux TCP, checked like the committed one"
  scripts/capture-fixtures.sh .build/live-capture.pcap
  IOTCP_CAPTURE=.build/live-capture.pcap swift test --skip-build --filter RealFrameTests 2>&1 | tee "$log" | grep -E "✘|Test run with" || true
  grep -qE "^✔ Test run with [0-9]+ tests? .*passed" "$log" || { echo "live capture check failed" >&2; tail -50 "$log" >&2; exit 1; }
  live=$(grep -oE "Test run with [0-9]+ tests" "$log" | grep -oE "[0-9]+" | tail -1)
  require "the live capture check" "$live" 5

  echo "== end to end: iotcp-fileserver over a TAP, curl in a network namespace"
  scripts/e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^e2e: (FAIL|[0-9]+ passed)|^e2e: wrk" || true
  grep -qE "^e2e: [0-9]+ passed, 0 failed" "$log" || { echo "end-to-end checks failed:" >&2; grep -E "FAIL|did not start" "$log" >&2; exit 1; }
  e2e=$(sed -nE "s/^e2e: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "e2e" "$e2e" 113

  echo "== end to end over IPv6: the same checks, every client over IPv6 (embedded and split)"
  E2E_FAMILY=ipv6 scripts/e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^e2e: (FAIL|[0-9]+ passed)|^e2e: wrk" || true
  grep -qE "^e2e: [0-9]+ passed, 0 failed" "$log" || { echo "end-to-end checks over IPv6 failed:" >&2; grep -E "FAIL|did not start" "$log" >&2; exit 1; }
  e2e6=$(sed -nE "s/^e2e: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "e2e over IPv6" "$e2e6" 118

  echo "== HTTPS: iotcp-fileserver with TLS, file records sealed on the NIC; curl, openssl s_client, wrk, loss"
  scripts/tls-e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^tls: (FAIL|[0-9]+ passed)|^tls: wrk" || true
  grep -qE "^tls: [0-9]+ passed, 0 failed" "$log" || { echo "HTTPS checks failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  tls=$(sed -nE "s/^tls: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "HTTPS" "$tls" 75

  echo "== HTTPS over IPv6: the same checks, the server on an IPv6 address alone"
  TLS_FAMILY=ipv6 scripts/tls-e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^tls: (FAIL|[0-9]+ passed)|^tls: wrk" || true
  grep -qE "^tls: [0-9]+ passed, 0 failed" "$log" || { echo "HTTPS checks over IPv6 failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  tls6=$(sed -nE "s/^tls: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "HTTPS over IPv6" "$tls6" 75

  echo "== AccelTCP offloads: SYN cookies on the NIC under a SYN flood, cookie edge cases with Linux clients"
  scripts/accel-e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^accel: (FAIL|[0-9]+ passed)|^accel: [a-z]+: sent" || true
  grep -qE "^accel: [0-9]+ passed, 0 failed" "$log" || { echo "AccelTCP offload checks failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  accel=$(sed -nE "s/^accel: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "AccelTCP offloads" "$accel" 43

  echo "== AccelTCP offloads over IPv6: the same checks, the server on an IPv6 address alone"
  ACCEL_FAMILY=ipv6 scripts/accel-e2e.sh .build/debug/iotcp-fileserver | tee "$log" | grep -E "^accel: (FAIL|[0-9]+ passed)|^accel: [a-z]+: sent" || true
  grep -qE "^accel: [0-9]+ passed, 0 failed" "$log" || { echo "AccelTCP offload checks over IPv6 failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  accel6=$(sed -nE "s/^accel: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "AccelTCP offloads over IPv6" "$accel6" 43

  echo "== splicing: iotcp-proxy in front of nginx and lighttpd, 0 B-200 MiB, loss, resets, a vanishing client, tshark"
  scripts/proxy-e2e.sh .build/debug/iotcp-proxy | tee "$log" | grep -E "^proxy: (FAIL|[0-9]+ passed)" || true
  grep -qE "^proxy: [0-9]+ passed, 0 failed" "$log" || { echo "splicing checks failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  proxy=$(sed -nE "s/^proxy: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "splicing" "$proxy" 40

  echo "== splicing over IPv6: the same checks, client, proxy and backends on IPv6 addresses (SPLICE6)"
  PROXY_FAMILY=ipv6 scripts/proxy-e2e.sh .build/debug/iotcp-proxy | tee "$log" | grep -E "^proxy: (FAIL|[0-9]+ passed)" || true
  grep -qE "^proxy: [0-9]+ passed, 0 failed" "$log" || { echo "splicing checks over IPv6 failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  proxy6=$(sed -nE "s/^proxy: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "splicing over IPv6" "$proxy6" 40

  echo "== iotcp as a library: a package of its own depending on it by path, built and serving"
  scripts/downstream.sh | tee "$log" | grep -E "^downstream:" || true
  grep -qE "^downstream: [0-9]+ passed, 0 failed" "$log" || { echo "the downstream package failed" >&2; tail -30 "$log" >&2; exit 1; }
  downstream=$(sed -nE "s/^downstream: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "the downstream package" "$downstream" 5

  echo "== libiotcp from C: installed with pkg-config, a C server on it, curl downloads, every error path"
  scripts/c-tests.sh | tee "$log" | grep -E "^c-tests:" || true
  grep -qE "^c-tests: [0-9]+ passed, 0 failed" "$log" || { echo "the C library checks failed" >&2; tail -30 "$log" >&2; exit 1; }
  ctests=$(sed -nE "s/^c-tests: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "the C library" "$ctests" 109

  echo "== lighttpd on iotcp: Debian's lighttpd 1.4.69 patched, embedded and split, curl and wrk"
  scripts/lighttpd-e2e.sh .build/debug/iotcp-nic | tee "$log" | grep -E "^lighttpd: (FAIL|[0-9]+ passed)|wrk: .*(requests in|Socket errors|Non-2xx)" || true
  grep -qE "^lighttpd: [0-9]+ passed, 0 failed" "$log" || { echo "lighttpd on iotcp failed" >&2; tail -30 "$log" >&2; exit 1; }
  lighttpd=$(sed -nE "s/^lighttpd: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "lighttpd on iotcp" "$lighttpd" 77

  echo "== lighttpd on iotcp over IPv6: the same checks, every client over IPv6 (the stack given both families)"
  LIGHTTPD_FAMILY=ipv6 scripts/lighttpd-e2e.sh .build/debug/iotcp-nic | tee "$log" | grep -E "^lighttpd: (FAIL|[0-9]+ passed)|wrk: .*(requests in|Socket errors|Non-2xx)" || true
  grep -qE "^lighttpd: [0-9]+ passed, 0 failed" "$log" || { echo "lighttpd on iotcp over IPv6 failed" >&2; tail -30 "$log" >&2; exit 1; }
  lighttpd6=$(sed -nE "s/^lighttpd: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "lighttpd on iotcp over IPv6" "$lighttpd6" 77

  echo "== soak: minutes of lossy mixed traffic with aborting, stalling and vanishing clients, then nothing left"
  SOAK_SECONDS=${SOAK_SECONDS:-60} scripts/soak.sh .build/debug | tee "$log" | grep -E "^soak:" | grep -vE "^soak: (PASS)" || true
  grep -qE "^soak: [0-9]+ passed, 0 failed" "$log" || { echo "soak checks failed:" >&2; grep -E "FAIL" "$log" >&2; exit 1; }
  soak=$(sed -nE "s/^soak: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "the soak" "$soak" 19

  echo "== RDMA testbed: a VM with Soft-RoCE and an NVMe disk, iotcp split across RDMA"
  scripts/rdma-vm.sh .build/debug | tee "$log" | grep -vE "^vm: (PASS|figures)" || true
  grep -qE "^vm: [0-9]+ passed, 0 failed" "$log" || { echo "RDMA testbed checks failed" >&2; exit 1; }
  vm=$(sed -nE "s/^vm: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
  require "the RDMA VM" "$vm" 32
fi

echo "== fuzz (${fuzz_seconds}s per target)"
scripts/fuzz.sh "$fuzz_seconds" | tee "$log"
fuzz=$(sed -nE "s/^fuzz: ([0-9]+) targets passed/\1/p" "$log" | tail -1)
require "fuzz" "$fuzz" 4

skipped=""
[ "$root" = no ] && skipped=" (root-only stages NOT run)"
echo "iotcp: $((unit + live + e2e + e2e6 + tls + tls6 + accel + accel6 + proxy + proxy6 + downstream + ctests + lighttpd + lighttpd6 + soak + vm + fuzz)) passed, 0 failed$skipped"
