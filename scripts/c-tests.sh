#!/usr/bin/env bash
# libiotcp from C: installs it into a scratch prefix with scripts/install.sh, builds Tests/C/iotcp_test.c
# with nothing but `cc ... $(pkg-config --cflags --libs iotcp)`, and runs it: an embedded stack serving a
# file through the C event queue and offload calls while curl in its namespace downloads it (sha256
# checked), then every error path of the interface.
#
# Usage (root): scripts/c-tests.sh    Prints "c-tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
namespace=iotcp-c-$$
test_pid=
cleanup() {
  [ -n "$test_pid" ] && kill "$test_pid" 2>/dev/null && wait "$test_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
passed=0 failed=0
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "c-tests: FAIL $1: expected $2, got $3"; fi
}

if ! PREFIX="$work/prefix" CONFIGURATION=debug scripts/install.sh >"$work/install.log" 2>&1; then
  cat "$work/install.log"; echo "c-tests: 0 passed, 1 failed (install)"; exit 1
fi
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
if ! cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$work/iotcp_test" Tests/C/iotcp_test.c $(pkg-config --cflags --libs iotcp) 2>"$work/cc.log"; then
  cat "$work/cc.log"; echo "c-tests: 0 passed, 1 failed (cc)"; exit 1
fi
check "a C program builds with pkg-config alone" yes yes

mkdir -p "$work/www"
head -c 3000000 /dev/urandom > "$work/www/file.bin"
"$work/iotcp_test" "$work/www" "$namespace" 10.93.0.2/24 8080 12 >"$work/test.out" 2>"$work/test.err" &
test_pid=$!
for _ in $(seq 100); do grep -q "^ready" "$work/test.out" 2>/dev/null && break; sleep 0.1; done
check "the C server started" yes "$(grep -q '^ready' "$work/test.out" && echo yes || { cat "$work/test.out" "$work/test.err" | tail -5; })"
expected=$(sha256sum < "$work/www/file.bin")
for attempt in 1 2 3 4 5; do
  status=$(ip netns exec "$namespace" curl -sS --max-time 20 -o "$work/got" -w '%{http_code}' http://10.93.0.2:8080/file.bin)
  check "curl download $attempt through the C server: status and sha256" "200 $expected" "$status $(sha256sum < "$work/got")"
done
wait "$test_pid"
status=$?
test_pid=
grep "^c: FAIL" "$work/test.out" | sed 's/^/c-tests: /'
c_passed=$(sed -nE 's/^c: ([0-9]+) passed, ([0-9]+) failed$/\1/p' "$work/test.out")
c_failed=$(sed -nE 's/^c: ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$work/test.out")
check "the C test program finished and exited 0" "0 0" "$status ${c_failed:-missing}"
passed=$((passed + ${c_passed:-0}))
check "its namespace is gone" "" "$(ip netns list | grep -w "$namespace")"
echo "c-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
