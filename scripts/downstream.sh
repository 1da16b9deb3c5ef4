#!/usr/bin/env bash
# iotcp as a library, the way Docs/using.md tells a Swift developer to use it: a package of its own
# (Examples/Downstream) depending on a fresh clone of this repository by path, built from nothing, then run:
# curl in the namespace it creates downloads files through it, byte-exact, and it cleans up on SIGTERM.
#
# Usage (root): scripts/downstream.sh    (clones the committed state of this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  ip netns del hello 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

source scripts/checks.sh downstream

# A path dependency's package name is its folder's name: the clone is called iotcp, as Docs/using.md says.
git clone -q . "$work/iotcp"
cp -r Examples/Downstream "$work/hello"
rm -rf "$work/hello/.build"
if ! (cd "$work/hello" && swift build >"$work/build.log" 2>&1); then
  tail -30 "$work/build.log"
  echo "downstream: 0 passed, 1 failed (the package did not build)"
  exit 1
fi
check "a package depending on iotcp by path builds" 0 "$(grep -c 'warning:' "$work/build.log" || true)"

mkdir -p "$work/www/sub"
head -c 3000000 /dev/urandom > "$work/www/big.bin"
echo "hello through iotcp" > "$work/www/sub/small.txt"
"$work/hello/.build/debug/HelloOffload" "$work/www" >"$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "^serving" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
client() { ip netns exec hello curl -sS --max-time 60 "$@"; }
status=$(client -o "$work/got" -w '%{http_code}' http://10.66.0.2:8080/big.bin || true)
check "3 MB through the library: status and sha256" "200 $(sha256sum < "$work/www/big.bin")" "$status $(sha256sum < "$work/got")"
check "a small file" "hello through iotcp" "$(client http://10.66.0.2:8080/sub/small.txt || true)"
check "a missing file is 404" 404 "$(client -o /dev/null -w '%{http_code}' http://10.66.0.2:8080/missing || true)"
status=$(client -o "$work/got6" -w '%{http_code}' 'http://[fd66::2]:8080/big.bin' || true)
check "over IPv6: 3 MB, status and sha256" "200 $(sha256sum < "$work/www/big.bin")" "$status $(sha256sum < "$work/got6")"
check "over IPv6: a missing file is 404" 404 "$(client -o /dev/null -w '%{http_code}' 'http://[fd66::2]:8080/missing' || true)"
kill -TERM "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
check "SIGTERM: the namespace is removed" "" "$(ip netns list | grep -w hello || true)"

checks_summary
