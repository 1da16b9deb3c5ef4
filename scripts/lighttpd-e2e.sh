#!/usr/bin/env bash
# lighttpd on iotcp, end to end: builds Debian's lighttpd 1.4.69 with the iotcp patch
# (Examples/lighttpd/build.sh), serves generated files with lighttpd's own configuration, and checks from a
# Linux client in the namespace what lighttpd promises: every byte of 0 B to 200 MiB by sha256, Range, HEAD,
# 304, 404, the directory index and its redirect, keep-alive, pipelining, the access log, files replaced
# between and during downloads, a file the NIC cannot open (sent through the host instead), and wrk with
# 1,600 connections.
# Twice: embedded (the NIC half on a thread of lighttpd) and split (iotcp-nic over shared memory); and
# lighttpd as a daemon (it forks after making its listeners).
#
# Usage (root): scripts/lighttpd-e2e.sh [NIC-BINARY]   (default .build/debug/iotcp-nic)
#   CONFIGURATION=debug|release   the libiotcp lighttpd links (debug)
#   LIGHTTPD_FAMILY=ipv6          every check with the client over IPv6 (the stack given both families;
#                                 lighttpd's one listener on 0.0.0.0 takes both, as a dual-stack socket does)
# Prints "lighttpd: N passed, M failed"; removes everything it made.
set -uo pipefail
cd "$(dirname "$0")/.."
nic_binary=${1:-.build/debug/iotcp-nic}
namespace=iotcp-lt-$$
case "${LIGHTTPD_FAMILY:-ipv4}" in
  ipv4) address=10.89.0.2 stack_address=10.89.0.2/24 web=10.89.0.2 ;;
  ipv6) address=fd89::2 stack_address=10.89.0.2/24,fd89::2/64 web='[fd89::2]' ;;
  *) echo "LIGHTTPD_FAMILY must be ipv4 or ipv6"; exit 2 ;;
esac
mkdir -p .build
work=$(mktemp -d -p "$PWD/.build" lighttpd-e2e.XXXXXX)
lighttpd_pid=
nic_pid=
cleanup() {
  [ -n "$lighttpd_pid" ] && kill "$lighttpd_pid" 2>/dev/null && wait "$lighttpd_pid" 2>/dev/null
  [ -n "$nic_pid" ] && kill "$nic_pid" 2>/dev/null && wait "$nic_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
source scripts/checks.sh lighttpd

if ! lighttpd=$(CONFIGURATION=${CONFIGURATION:-debug} Examples/lighttpd/build.sh 2>"$work/build.log" | tail -1) || [ ! -x "$lighttpd" ]; then
  tail -30 "$work/build.log"; echo "lighttpd: 0 passed, 1 failed (build)"; exit 1
fi
check "lighttpd 1.4.69 builds from Debian's source with the iotcp patch" yes yes

mkdir -p "$work/www/docs" "$work/logs"
sizes=(0 1 1447 1448 1449 65535 65536 512000 10485760 209715200)
for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
echo '<h1>lighttpd on iotcp</h1>' > "$work/www/index.html"
echo '<h1>docs</h1>' > "$work/www/docs/index.html"
head -c 70000 /dev/urandom > "$work/outside.bin"
ln -s "$work/outside.bin" "$work/www/linked.bin"

client() { ip netns exec "$namespace" curl -sS --max-time 600 "$@"; }
url="http://$web:8080"

start_lighttpd() {  # start_lighttpd LABEL NIC
  local label=$1 nic=$2
  : > "$work/logs/access.log"
  env IOTCP_NIC="$nic" IOTCP_ROOT="$work/www" IOTCP_NETNS="$namespace" IOTCP_ADDRESS="$stack_address" \
    LIGHTTPD_ROOT="$work/www" LIGHTTPD_PORT=8080 LIGHTTPD_LOGS="$work/logs" \
    "$lighttpd" -D -f Examples/lighttpd/lighttpd.conf >"$work/$label.out" 2>"$work/$label.err" &
  lighttpd_pid=$!
  for _ in $(seq 100); do
    ip netns exec "$namespace" curl -s -o /dev/null --max-time 1 "$url/index.html" 2>/dev/null && break
    kill -0 "$lighttpd_pid" 2>/dev/null || break
    sleep 0.1
  done
  check "$label: lighttpd started on iotcp" yes "$(client -o /dev/null --max-time 5 "$url/index.html" 2>/dev/null && echo yes || { tail -3 "$work/$label.err" "$work/logs/error.log" 2>/dev/null | tr '\n' ' '; })"
}
stop_lighttpd() {  # stop_lighttpd LABEL
  kill -TERM "$lighttpd_pid" 2>/dev/null
  wait "$lighttpd_pid"
  check "$1: lighttpd stops cleanly on SIGTERM" 0 "$?"
  lighttpd_pid=
}

serve_checks() {  # serve_checks LABEL
  local label=$1 size status modified
  for size in "${sizes[@]}"; do
    status=$(client -o "$work/got" -w '%{http_code}' "$url/file-$size.bin")
    check "$label: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
  done
  check "$label: GET / is the index file" "$(cat "$work/www/index.html")" "$(client "$url/")"
  check "$label: a directory without its slash is redirected" "301 $url/docs/" \
    "$(client -o /dev/null -w '%{http_code} %{redirect_url}' "$url/docs")"
  check "$label: the directory's index" "$(cat "$work/www/docs/index.html")" "$(client "$url/docs/")"
  check "$label: HEAD has the length and no body" "200 65536 0" \
    "$(client -I -o "$work/head" -w '%{http_code} ' "$url/file-65536.bin")$(tr -d '\r' < "$work/head" | awk '/^Content-Length/ {print $2}') $(client -I -o /dev/null -w '%{size_download}' "$url/file-65536.bin")"
  check "$label: 404 for a missing file" 404 "$(client -o /dev/null -w '%{http_code}' "$url/missing")"
  size=10485760
  check "$label: Range: bytes=1000-1999" "206 $(tail -c +1001 "$work/www/file-$size.bin" | head -c 1000 | sha256sum)" \
    "$(client -o "$work/part" -w '%{http_code}' -H 'Range: bytes=1000-1999' "$url/file-$size.bin") $(sha256sum < "$work/part")"
  check "$label: Range: bytes=-500" "206 $(tail -c 500 "$work/www/file-$size.bin" | sha256sum)" \
    "$(client -o "$work/part" -w '%{http_code}' -H 'Range: bytes=-500' "$url/file-$size.bin") $(sha256sum < "$work/part")"
  check "$label: Range: bytes=5000000- of 10 MiB" "206 $(tail -c +5000001 "$work/www/file-$size.bin" | sha256sum)" \
    "$(client -o "$work/part" -w '%{http_code}' -H 'Range: bytes=5000000-' "$url/file-$size.bin") $(sha256sum < "$work/part")"
  check "$label: 416 for a range past the end" 416 "$(client -o /dev/null -w '%{http_code}' -H "Range: bytes=$size-" "$url/file-$size.bin")"
  modified=$(client -I "$url/file-1449.bin" | tr -d '\r' | sed -n 's/^Last-Modified: //p')
  check "$label: 304 for If-Modified-Since equal to Last-Modified" 304 "$(client -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $modified" "$url/file-1449.bin")"
  check "$label: 200 for an older If-Modified-Since" 200 "$(client -o /dev/null -w '%{http_code}' -H 'If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT' "$url/file-1449.bin")"
  check "$label: keep-alive: two downloads, one connection" "200 200 1" \
    "$(client -o "$work/got" -o "$work/got2" -w '%{http_code} ' "$url/file-65536.bin" "$url/file-512000.bin" | tr -s ' ')$(client -o /dev/null -o /dev/null -w '%{num_connects}+' "$url/file-1.bin" "$url/file-1.bin" | awk -F+ '{print $1 + $2}')"
  local pipelined
  pipelined=$(ip netns exec "$namespace" timeout 10 bash -c "exec 3<>/dev/tcp/$address/8080
    printf 'GET /file-1447.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
    cat <&3" | grep -ao 'HTTP/1.1 [0-9][0-9][0-9]' | awk '{print $2}' | tr '\n' ' ')
  check "$label: pipelining: three requests in one write, answered in order" "200 404 200 " "$pipelined"
  # A file replaced while lighttpd serves it: the NIC's open copy is stale, and the new one is sent.
  head -c 100000 /dev/urandom > "$work/new.bin" && mv "$work/new.bin" "$work/www/file-65535.bin"
  sleep 1.1  # lighttpd's stat cache trusts an entry for the second it was made in
  check "$label: a replaced file is sent as it is now" "200 $(sha256sum < "$work/www/file-65535.bin")" \
    "$(client -o "$work/got" -w '%{http_code}' "$url/file-65535.bin") $(sha256sum < "$work/got")"
  # Replaced while a slow download of it is under way: that download keeps the bytes it started with
  # (lighttpd's open file), the next one gets the new file, and neither gets a mix.
  head -c 6000000 /dev/urandom > "$work/www/moving.bin"
  cp "$work/www/moving.bin" "$work/moving-old.bin"
  client -o "$work/slow" --limit-rate 2M "$url/moving.bin" &
  local slow_pid=$!
  sleep 1
  head -c 6000000 /dev/urandom > "$work/moving-new.bin" && cp "$work/moving-new.bin" "$work/moving.tmp" && mv "$work/moving.tmp" "$work/www/moving.bin"
  sleep 1.1
  check "$label: replaced mid-download: a new request gets the new file" "$(sha256sum < "$work/moving-new.bin")" \
    "$(client -o - "$url/moving.bin" | sha256sum)"
  wait "$slow_pid"
  check "$label: replaced mid-download: the download under way keeps the old file" "$(sha256sum < "$work/moving-old.bin")" \
    "$(sha256sum < "$work/slow")"
  check "$label: a file the NIC refuses (a symlink out of its root) is sent through the host" "200 $(sha256sum < "$work/outside.bin")" \
    "$(client -o "$work/got" -w '%{http_code}' "$url/linked.bin") $(sha256sum < "$work/got")"
  check "$label: the access log has the requests" yes \
    "$(sleep 1; grep -q '"GET /file-209715200.bin HTTP/1.1" 200 209715200' "$work/logs/access.log" && echo yes || echo no)"
  # ... naming the client by its own family (over IPv6 lighttpd got a sockaddr_in6 from the glue's accept).
  check "$label: the access log names the client's address" yes \
    "$(grep -q "^${address%2}1 .*\"GET /file-209715200.bin" "$work/logs/access.log" && echo yes || head -1 "$work/logs/access.log")"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null  # wrk holds a descriptor per connection
  local wrk_out
  wrk_out=$(ip netns exec "$namespace" wrk -t 2 -c 1600 -d 10s --timeout 10s "$url/file-65536.bin" 2>&1)
  echo "$wrk_out" | sed -n "s/^/lighttpd: $label: wrk: /p" | grep -E "Requests/sec|Transfer/sec|requests in|Socket errors|Non-2xx"
  check "$label: wrk 1,600 connections: requests completed" yes "$(echo "$wrk_out" | awk '/requests in/ {print ($1 > 1000 ? "yes" : "only " $1)}')"
  check "$label: wrk: no socket errors" "" "$(echo "$wrk_out" | grep 'Socket errors')"
  echo "$wrk_out" | grep -q 'Socket errors' && tail -5 "$work/logs/error.log" "$work/$label.err" | sed "s/^/lighttpd: $label: /"
  check "$label: wrk: no non-2xx responses" "" "$(echo "$wrk_out" | grep 'Non-2xx')"
  check "$label: afterwards a download is still byte-exact" "200 $(sha256sum < "$work/www/file-10485760.bin")" \
    "$(client -o "$work/got" -w '%{http_code}' "$url/file-10485760.bin") $(sha256sum < "$work/got")"
}

# Embedded: lighttpd's process holds the NIC half too, on a thread, and makes the namespace itself.
start_lighttpd embedded embedded
serve_checks embedded
check "embedded: the NIC refusal is reported once" 1 "$(grep -c 'could not open /linked.bin' "$work/embedded.err")"
stop_lighttpd embedded
check "embedded: its namespace is gone" "" "$(ip netns list | grep -w "$namespace")"

# Daemon mode: lighttpd forks after making its listeners; the stack is made in the process that serves.
env IOTCP_NIC=embedded IOTCP_ROOT="$work/www" IOTCP_NETNS="$namespace" IOTCP_ADDRESS="$stack_address" \
  LIGHTTPD_ROOT="$work/www" LIGHTTPD_PORT=8080 LIGHTTPD_LOGS="$work/logs" "$lighttpd" -f Examples/lighttpd/lighttpd.conf \
  >"$work/daemon.out" 2>&1
check "daemon: lighttpd daemonises on iotcp (its parent exits 0)" 0 "$?"
daemon_pid=$(pgrep -f "^$lighttpd -f Examples/lighttpd/lighttpd.conf\$" | head -1)
for _ in $(seq 100); do ip netns exec "$namespace" curl -s -o /dev/null --max-time 1 "$url/index.html" 2>/dev/null && break; sleep 0.1; done
check "daemon: the daemon serves 10 MiB byte-exact" "200 $(sha256sum < "$work/www/file-10485760.bin")" \
  "$(client -o "$work/got" -w '%{http_code}' "$url/file-10485760.bin") $(sha256sum < "$work/got")"
[ -n "$daemon_pid" ] && kill -TERM "$daemon_pid"
for _ in $(seq 100); do [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
check "daemon: it stops on SIGTERM and removes its namespace" "stopped " \
  "$( [ -n "$daemon_pid" ] && ! kill -0 "$daemon_pid" 2>/dev/null && echo stopped) $(ip netns list | grep -w "$namespace")"

# Split: iotcp-nic owns the TAP, the namespace and the files; lighttpd is the host half over shared memory.
head -c 65535 /dev/urandom > "$work/www/file-65535.bin"
"$nic_binary" --export-root "$work/www" --channel "shm:$work/nic.sock" --netns "$namespace" --address "$stack_address" --once \
  >"$work/nic.out" 2>"$work/nic.log" &
nic_pid=$!
for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
start_lighttpd split "shm:$work/nic.sock"
serve_checks split
stop_lighttpd split
for _ in $(seq 50); do kill -0 "$nic_pid" 2>/dev/null || break; sleep 0.1; done  # --once: it leaves with its host
check "split: iotcp-nic leaves with lighttpd" gone "$(kill -0 "$nic_pid" 2>/dev/null && echo running || echo gone)"
kill -TERM "$nic_pid" 2>/dev/null; wait "$nic_pid" 2>/dev/null; nic_pid=

checks_summary
