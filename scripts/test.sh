#!/usr/bin/env bash
# Runs every test: unit, property and simulation tests, the two-process channel tests, a real Linux peer
# over a TAP, a fresh capture of real Linux frames checked byte for byte, the end-to-end curl checks
# against iotcp-fileserver, the RDMA testbed VM (scripts/rdma-vm.sh) (those four need root, as CI has),
# and the libFuzzer targets for a bounded time.
#
# Usage: scripts/test.sh            FUZZ_SECONDS=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
fuzz_seconds=${FUZZ_SECONDS:-30}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== build"
swift build --build-tests 2>&1 | grep -vE "^\[[0-9]+/[0-9]+\]" || true
swift build --build-tests >/dev/null 2>&1 || { swift build --build-tests; exit 1; }

echo "== swift test"
swift test --skip-build 2>&1 | tee "$log" | grep -E "^✘|Test run with" || true
grep -qE "^✔ Test run with [0-9]+ tests? .*passed" "$log" || { echo "swift test failed" >&2; tail -50 "$log" >&2; exit 1; }
unit=$(grep -oE "Test run with [0-9]+ tests" "$log" | grep -oE "[0-9]+" | tail -1)

live=0
if [ "$(id -u)" -eq 0 ]; then
  echo "== a fresh capture of Linux TCP, checked like the committed one"
  scripts/capture-fixtures.sh .build/live-capture.pcap
  IOTCP_CAPTURE=.build/live-capture.pcap swift test --skip-build --filter RealFrameTests 2>&1 | tee "$log" | grep -E "✘|Test run with" || true
  grep -qE "^✔ Test run with [0-9]+ tests? .*passed" "$log" || { echo "live capture check failed" >&2; tail -50 "$log" >&2; exit 1; }
  live=$(grep -oE "Test run with [0-9]+ tests" "$log" | grep -oE "[0-9]+" | tail -1)
fi

e2e=0
if [ "$(id -u)" -eq 0 ]; then
  echo "== end to end: iotcp-fileserver over a TAP, curl in a network namespace"
  scripts/e2e.sh .build/debug/iotcp-fileserver | tee "$log" | tail -3
  grep -qE "^e2e: [0-9]+ passed, 0 failed" "$log" || { echo "end-to-end checks failed" >&2; exit 1; }
  e2e=$(sed -nE "s/^e2e: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
fi

vm=0
if [ "$(id -u)" -eq 0 ]; then
  echo "== RDMA testbed: a VM with Soft-RoCE and an NVMe disk, iotcp split across RDMA"
  scripts/rdma-vm.sh .build/debug | tee "$log" | grep -vE "^vm: (PASS|figures)" || true
  grep -qE "^vm: [0-9]+ passed, 0 failed" "$log" || { echo "RDMA testbed checks failed" >&2; exit 1; }
  vm=$(sed -nE "s/^vm: ([0-9]+) passed.*/\1/p" "$log" | tail -1)
fi

echo "== fuzz (${fuzz_seconds}s per target)"
scripts/fuzz.sh "$fuzz_seconds"

echo "iotcp: $((unit + live + e2e + vm + 2)) passed, 0 failed"
