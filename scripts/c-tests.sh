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
source scripts/checks.sh c-tests

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
"$work/iotcp_test" "$work/www" "$namespace" 10.93.0.2/24,fd93::2/64 8080 12 >"$work/test.out" 2>"$work/test.err" &
test_pid=$!
for _ in $(seq 100); do grep -q "^ready" "$work/test.out" 2>/dev/null && break; sleep 0.1; done
check "the C server started" yes "$(grep -q '^ready' "$work/test.out" && echo yes || { cat "$work/test.out" "$work/test.err" | tail -5; })"
expected=$(sha256sum < "$work/www/file.bin")
# Over both families: the stack has an address of each, and the one listener takes both.
for attempt in 1 2 3 4 5 6; do
  host=10.93.0.2
  [ $((attempt % 2)) = 0 ] && host='[fd93::2]'
  status=$(ip netns exec "$namespace" curl -sS --max-time 20 -o "$work/got" -w '%{http_code}' "http://$host:8080/file.bin")
  check "curl download $attempt through the C server (http://$host): status and sha256" "200 $expected" "$status $(sha256sum < "$work/got")"
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

# libiotcp.so exports exactly the functions iotcp.h declares (Sources/IOTCPC/libiotcp.map): no Swift
# symbol and no internal C helper can clash with a program's own.
check "libiotcp.so exports exactly the functions of iotcp.h" \
  "$(grep -oE '\biotcp_[a-z0-9_]+ *\(' Sources/CIOTCPABI/include/iotcp.h | tr -d ' (' | sort -u | tr '\n' ' ')" \
  "$(nm -D --defined-only "$work/prefix/lib/libiotcp.so" | awk '$2 ~ /[A-Z]/ {print $3}' | sort | tr '\n' ' ')"

# The static library: the same test program linked with iotcp-static.pc carries libiotcp and the Swift
# runtime in itself.
if cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$work/iotcp_test_static" Tests/C/iotcp_test.c $(pkg-config --cflags --libs iotcp-static) 2>"$work/cc.log"; then
  check "a C program links libiotcp statically with pkg-config alone, and needs no Swift library to run" "" \
    "$(ldd "$work/iotcp_test_static" | grep -E 'libswift|libiotcp|libdispatch')"
  "$work/iotcp_test_static" "$work/www" "$namespace" 10.93.0.2/24,fd93::2/64 8080 6 >"$work/static.out" 2>"$work/static.err" &
  test_pid=$!
  for _ in $(seq 100); do grep -q "^ready" "$work/static.out" 2>/dev/null && break; sleep 0.1; done
  for host in 10.93.0.2 '[fd93::2]'; do
    status=$(ip netns exec "$namespace" curl -sS --max-time 20 -o "$work/got" -w '%{http_code}' "http://$host:8080/file.bin")
    check "static: curl download (http://$host): status and sha256" "200 $expected" "$status $(sha256sum < "$work/got")"
  done
  wait "$test_pid"
  status=$?
  test_pid=
  grep "^c: FAIL" "$work/static.out" | sed 's/^/c-tests: static: /'
  check "static: the test program passed every check and exited 0" "0 0" \
    "$status $(sed -nE 's/^c: ([0-9]+) passed, ([0-9]+) failed$/\2/p' "$work/static.out")"
else
  cat "$work/cc.log"; check "a C program links libiotcp statically with pkg-config alone" yes no
fi

# Examples/c-fileserver: the C twin of iotcp-fileserver, built the way its header comment says.
if cc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$work/c-fileserver" Examples/c-fileserver/c-fileserver.c $(pkg-config --cflags --libs iotcp) 2>"$work/cc.log"; then
  check "Examples/c-fileserver builds with pkg-config alone" yes yes
  head -c 20000000 /dev/urandom > "$work/www/big.bin"
  echo '<h1>c-fileserver</h1>' > "$work/www/index.html"
  "$work/c-fileserver" "$work/www" --netns "$namespace" --address 10.93.0.2/24,fd93::2/64 --port 8081 >"$work/server.out" 2>"$work/server.err" &
  test_pid=$!
  for _ in $(seq 100); do grep -q "^c-fileserver: serving" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
  check "c-fileserver started" "c-fileserver: serving $work/www on http://10.93.0.2:8081/" "$(head -1 "$work/server.out")"
  fetch() { ip netns exec "$namespace" curl -sS --max-time 30 "$@"; }
  # Every check over IPv4, then over IPv6.
  for url in http://10.93.0.2:8081 'http://[fd93::2]:8081'; do
  for file in file.bin big.bin index.html; do
    check "c-fileserver: GET /$file by sha256 ($url)" "200 $(sha256sum < "$work/www/$file")" "$(fetch -o "$work/got" -w '%{http_code}' "$url/$file") $(sha256sum < "$work/got")"
  done
  check "c-fileserver: GET / is index.html" "$(cat "$work/www/index.html")" "$(fetch "$url/")"
  check "c-fileserver: HEAD has the length, no body" "200 20000000 0" \
    "$(fetch -I -o "$work/head" -w '%{http_code} ' "$url/big.bin")$(tr -d '\r' < "$work/head" | awk '/^Content-Length/ {print $2}') $(fetch -I -o /dev/null -w '%{size_download}' "$url/big.bin")"
  check "c-fileserver: 404 for a missing file" 404 "$(fetch -o /dev/null -w '%{http_code}' "$url/missing")"
  check "c-fileserver: 403 for /../" 403 "$(fetch -o /dev/null -w '%{http_code}' --path-as-is "$url/../etc/passwd")"
  check "c-fileserver: 405 for POST" 405 "$(fetch -o /dev/null -w '%{http_code}' -X POST "$url/index.html")"
  check "c-fileserver: keep-alive: two downloads on one connection" "200 200 1" \
    "$(fetch -o /dev/null -o /dev/null -w '%{http_code} ' "$url/file.bin" "$url/index.html" | tr -s ' ')$(fetch -o /dev/null -o /dev/null -w '%{num_connects}+' "$url/index.html" "$url/index.html" | awk -F+ '{print $1 + $2}')"
  host=${url#http://}; host=${host%:8081}; host=${host#\[}; host=${host%\]}
  pipelined=$(ip netns exec "$namespace" timeout 10 bash -c 'exec 3<>/dev/tcp/'"$host"'/8081
    printf "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3
    cat <&3' | grep -ao 'HTTP/1.1 [0-9][0-9][0-9]' | awk '{print $2}' | tr '\n' ' ')
  check "c-fileserver: pipelining: three requests in one write, answered in order ($url)" "200 404 200 " "$pipelined"
  done
  kill -TERM "$test_pid"; wait "$test_pid"
  check "c-fileserver: stops on SIGTERM with status 0" 0 "$?"
  test_pid=
  check "c-fileserver: its namespace is gone" "" "$(ip netns list | grep -w "$namespace")"
else
  cat "$work/cc.log"; check "Examples/c-fileserver builds with pkg-config alone" yes no
fi
checks_summary
