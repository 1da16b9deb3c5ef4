#!/usr/bin/env bash
# End to end with real clients: starts iotcp-fileserver (embedded: host engine and NIC data plane in one
# process, a TAP in a fresh network namespace as the wire) on generated files, then downloads them with
# curl from inside the namespace and checks every byte by sha256, plus the error statuses; then reads a
# capture of a run with tshark, and downloads 50 MiB through the fault-injecting wire at 1% and 5% loss.
#
# Usage (root): scripts/e2e.sh [BINARY]    (default: .build/debug/iotcp-fileserver)
# Prints "e2e: N passed, M failed" and exits non-zero on any failure. Removes everything it made.
set -uo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/debug/iotcp-fileserver}
namespace=iotcp-e2e-$$
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www/docs"
sizes=(0 1 1447 1448 1449 65535 65536 512000 10485760 209715200)
for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
echo '<h1>iotcp</h1>' > "$work/www/index.html"
ln -s /etc/passwd "$work/www/escape"

"$binary" --root "$work/www" --netns "$namespace" --address 10.88.0.2/24 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "^serving http://" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q "^serving http://10.88.0.2:8080/ in network namespace $namespace" "$work/server.out"; then
  echo "e2e: the server did not start:"; cat "$work/server.out" "$work/server.log"; echo "e2e: 0 passed, 1 failed"; exit 1
fi

passed=0 failed=0
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "e2e: FAIL $1: expected $2, got $3"; fi
}
client() { ip netns exec "$namespace" curl -sS --max-time 600 "$@"; }

for size in "${sizes[@]}"; do
  status=$(client -o "$work/got" -w '%{http_code}' "http://10.88.0.2:8080/file-$size.bin")
  check "GET $size bytes: status" 200 "$status"
  check "GET $size bytes: sha256" "$(sha256sum < "$work/www/file-$size.bin")" "$(sha256sum < "$work/got")"
done
check "GET /" "$(cat "$work/www/index.html")" "$(client http://10.88.0.2:8080/)"
check "HEAD status and length" "200 65536" "$(client -I -o /dev/null -w '%{http_code} ' http://10.88.0.2:8080/file-65536.bin)$(client -sI http://10.88.0.2:8080/file-65536.bin | tr -d '\r' | awk '/^Content-Length/ {print $2}')"
check "404 for a missing file" 404 "$(client -o /dev/null -w '%{http_code}' http://10.88.0.2:8080/missing)"
check "403 for a symlink out of the root" 403 "$(client -o /dev/null -w '%{http_code}' http://10.88.0.2:8080/escape)"
check "403 for /../" 403 "$(client -o /dev/null -w '%{http_code}' --path-as-is http://10.88.0.2:8080/../etc/passwd)"
check "403 for %2e%2e" 403 "$(client -o /dev/null -w '%{http_code}' --path-as-is 'http://10.88.0.2:8080/%2e%2e/%2e%2e/etc/passwd')"
check "405 for POST" 405 "$(client -o /dev/null -w '%{http_code}' -X POST http://10.88.0.2:8080/index.html)"
check "keep-alive reuses the connection" "200 200 1 0" "$(client -o /dev/null -o /dev/null -w '%{http_code} ' http://10.88.0.2:8080/index.html http://10.88.0.2:8080/index.html | tr -s ' ')$(client -o /dev/null -o /dev/null -w '%{num_connects} ' http://10.88.0.2:8080/index.html http://10.88.0.2:8080/index.html | sed 's/ $//')"
check "ping answered by the NIC" 0 "$(ip netns exec "$namespace" ping -c 1 -W 2 10.88.0.2 >/dev/null; echo $?)"

kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
check "the namespace is removed on SIGTERM" "" "$(ip netns list | grep -w "$namespace")"
if grep -q "NIC error" "$work/server.log"; then failed=$((failed + 1)); echo "e2e: FAIL NIC errors:"; grep "NIC error" "$work/server.log" | head; fi

# start_server NAME EXTRA-ARGUMENTS...: a server on the same files, for the runs below.
start_server() {
  local label=$1; shift
  "$binary" --root "$work/www" --netns "$namespace" --address 10.88.0.2/24 "$@" >"$work/$label.out" 2>"$work/$label.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/$label.out" 2>/dev/null && break; sleep 0.1; done
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=; }

# A capture of a run, read by tshark: no malformed frame, no bad checksum, in either direction.
start_server capture --pcap "$work/run.pcap"
for size in 1449 65536 512000 10485760; do client -o /dev/null "http://10.88.0.2:8080/file-$size.bin"; done
client -o /dev/null http://10.88.0.2:8080/missing
stop_server
frames=$(tshark -r "$work/run.pcap" 2>/dev/null | wc -l)
check "the capture holds the run" yes "$([ "$frames" -gt 1000 ] && echo yes || echo "only $frames frames")"
check "tshark -z expert reports no errors" "" "$(tshark -r "$work/run.pcap" -q -z expert 2>/dev/null | grep -A20 '^Errors' | grep -E 'Malformed|checksum' | head -3)"
check "no frame fails its IP or TCP checksum" 0 "$(tshark -r "$work/run.pcap" -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE \
  -Y 'tcp.checksum.status == 2 || ip.checksum.status == 2 || _ws.malformed' 2>/dev/null | wc -l | tr -d ' ')"

# 50 MiB through the fault-injecting wire: loss, reordering and duplication in both directions.
head -c 52428800 /dev/urandom > "$work/www/fifty.bin"
for loss in 0.01 0.05; do
  start_server "faults-$loss" --loss "$loss" --reorder 0.01 --duplicate 0.01 --seed 7
  status=$(client --max-time 600 -o "$work/got" -w '%{http_code}' http://10.88.0.2:8080/fifty.bin)
  stop_server
  check "50 MiB at $loss loss with reordering and duplication: status" 200 "$status"
  check "50 MiB at $loss loss with reordering and duplication: sha256" "$(sha256sum < "$work/www/fifty.bin")" "$(sha256sum < "$work/got")"
done
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
