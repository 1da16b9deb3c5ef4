#!/usr/bin/env bash
# A soak: iotcp split (iotcp-nic and the file server over shared memory) under minutes of mixed traffic on
# a lossy wire, with clients that behave badly: some abort mid-download, some ask for a large file and never
# read it, some vanish (their packets are dropped from then on, so the server hears neither FIN nor RST),
# some send half a request head and wait. Then, once the server's timeouts have run: no flow, no open
# file, no stored byte and no chunk left on the NIC, no session left in the file server, descriptors back
# to what they were when idle, and resident memory within a bound of its idle size. The server has both
# families (10.89.0.2 and fd89::2): every kind of client runs over IPv4 and over IPv6 at once.
#
# Usage (root): scripts/soak.sh [BINARY_DIRECTORY]    (default .build/debug)   SOAK_SECONDS=90
# Prints "soak: N passed, M failed" and exits non-zero on any failure. Removes everything it made.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.build/debug}
seconds=${SOAK_SECONDS:-90}
namespace=iotcp-soak-$$
mkdir -p .build
work=$(mktemp -d -p "$PWD/.build" soak.XXXXXX)
server_pid= nic_pid=
children=()
cleanup() {
  for pid in "${children[@]}"; do kill "$pid" 2>/dev/null; done
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$nic_pid" ] && kill "$nic_pid" 2>/dev/null && wait "$nic_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

source scripts/checks.sh soak

mkdir -p "$work/www"
for size in 100 4096 65536 512000 3000000 30000000; do head -c "$size" /dev/urandom > "$work/www/f$size.bin"; done
"$bin/iotcp-nic" --export-root "$work/www" --channel "shm:$work/nic.sock" --netns "$namespace" --address 10.89.0.2/24,fd89::2/64 --once \
  --loss 0.01 --reorder 0.01 --seed 3 --stats-interval 0 >"$work/nic.out" 2>"$work/nic.log" &
nic_pid=$!
for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
"$bin/iotcp-fileserver" --nic "shm:$work/nic.sock" --netns "$namespace" --address 10.89.0.2/24,fd89::2/64 --quiet \
  --header-timeout 3 --idle-timeout 5 --send-timeout 5 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "^serving http://" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
client() { ip netns exec "$namespace" "$@"; }
check "the server is up" 200 "$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://10.89.0.2:8080/f100.bin)"
check "the server is up over IPv6" 200 "$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 'http://[fd89::2]:8080/f100.bin')"
if [ "$failed" -ne 0 ]; then cat "$work/nic.log" "$work/server.log" | tail -20; echo "soak: $passed passed, $failed failed"; exit 1; fi
sleep 2  # past the file server's open-file cache (1 s, swept every 250 ms): the probes' file is closed again
descriptors() { ls /proc/"$1"/fd 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
idle_fds_nic=$(descriptors "$nic_pid") idle_fds_server=$(descriptors "$server_pid")
idle_rss_nic=$(rss "$nic_pid") idle_rss_server=$(rss "$server_pid")

# Well-behaved load: wrk over every size, one over each family.
cat > "$work/mixed.lua" <<'EOF'
local sizes = {100, 4096, 65536, 512000, 3000000}
request = function() return wrk.format("GET", "/f" .. sizes[math.random(#sizes)] .. ".bin") end
EOF
ulimit -n "$(ulimit -Hn)" 2>/dev/null
client wrk -t 1 -c 100 -d "${seconds}s" --timeout 10s -s "$work/mixed.lua" http://10.89.0.2:8080/ >"$work/wrk.out" 2>&1 &
children+=($!)
client wrk -t 1 -c 100 -d "${seconds}s" --timeout 10s -s "$work/mixed.lua" 'http://[fd89::2]:8080/' >"$work/wrk6.out" 2>&1 &
children+=($!)
end=$((SECONDS + seconds))
# Aborting clients: downloads cut short, over each family in turn.
( while [ $SECONDS -lt $end ]; do
    client curl -s -o /dev/null --max-time 0.3 http://10.89.0.2:8080/f30000000.bin
    client curl -s -o /dev/null --max-time 0.3 'http://[fd89::2]:8080/f30000000.bin'
  done ) &
children+=($!)
# Stalling clients: a large file asked for and never read, and half a request head, over both families.
( while [ $SECONDS -lt $end ]; do
    for server in 10.89.0.2 fd89::2; do
      client timeout 8 bash -c "exec 3<>/dev/tcp/$server/8080; printf 'GET /f30000000.bin HTTP/1.1\r\nHost: x\r\n\r\n' >&3; sleep 7" 2>/dev/null &
      client timeout 8 bash -c "exec 3<>/dev/tcp/$server/8080; printf 'GET /f100.bin HTTP/1.1\r\nHo' >&3; sleep 7" 2>/dev/null &
    done
    sleep 1
  done; wait ) &
children+=($!)
# Vanishing clients: from a fixed local port; once the download starts, every packet of that port is
# dropped in the client's namespace and the client killed: the server hears nothing more. Every other one
# over IPv6 (the inet table filters both families).
client nft add table inet soak
client nft add chain inet soak out '{ type filter hook output priority 0; }'
client nft add chain inet soak in '{ type filter hook input priority 0; }'
( port=41000; while [ $SECONDS -lt $end ]; do
    port=$(( port == 41900 ? 41000 : port + 1 ))
    url=http://10.89.0.2:8080/f3000000.bin
    [ $((port % 2)) = 1 ] && url='http://[fd89::2]:8080/f3000000.bin'
    client curl -s -o /dev/null --local-port "$port" --limit-rate 100k --max-time 30 "$url" &
    pid=$!
    sleep 0.5
    client nft add rule inet soak out tcp sport "$port" drop
    client nft add rule inet soak in tcp dport "$port" drop
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null  # reaped here, so the shell does not report it killed
    sleep 1
  done ) &
children+=($!)

sleep "$seconds"
for pid in "${children[@]}"; do wait "$pid" 2>/dev/null; done
children=()
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
requests6=$(awk '/requests in/ {print $1}' "$work/wrk6.out")
check "wrk over IPv4 completed requests" yes "$([ "${requests:-0}" -gt 500 ] && echo yes || echo "only ${requests:-0}")"
check "wrk over IPv6 completed requests" yes "$([ "${requests6:-0}" -gt 500 ] && echo yes || echo "only ${requests6:-0}")"
check "wrk: no non-2xx" "" "$(grep 'Non-2xx' "$work/wrk.out" "$work/wrk6.out")"
echo "soak: $requests (IPv4) and $requests6 (IPv6) well-behaved requests in ${seconds} s under 1% loss, beside aborting, stalling and vanishing clients"

# Let every timeout run out: idle (5 s), send (5 s), header (3 s), and the TCP timers of vanished peers.
# The send timeout aborts a session's connection, but one the server closed with data unacknowledged is an
# orphan: eight retransmissions (Linux's tcp_orphan_retries) whose backoff is capped at 60 s, about 100 s
# from a 200 ms RTO and up to nine minutes from one already backed off when the client vanished. The wait
# covers that worst case; it ends as soon as everything is back to idle.
settled=no
settle_start=$SECONDS
for _ in $(seq 270); do
  sleep 2
  kill -USR1 "$nic_pid" "$server_pid"
  sleep 0.3
  nic_state=$(grep counters "$work/nic.log" | tail -1)
  sessions=$(grep -o 'sessions [0-9]*' "$work/server.log" | tail -1 | awk '{print $2}')
  flows=$(echo "$nic_state" | grep -oE '(^| )flows=[0-9]*' | cut -d= -f2)
  files=$(echo "$nic_state" | grep -o 'open-files=[0-9]*' | cut -d= -f2)
  if [ "${sessions:-1}" = 0 ] && [ "${flows:-1}" = 0 ] && [ "${files:-1}" = 0 ]; then settled=yes; break; fi
done
check "every session, flow and file ended once the clients were gone" yes "$settled"
settle_seconds=$((SECONDS - settle_start))
echo "soak: back to idle $settle_seconds s after the load ended"
# Every stalled or vanished client here held a keep-alive session, which the send timeout aborts: none may
# be left as an orphan to run out its retransmissions (as one did when a response queued whole counted as
# idle, was closed gracefully and held a NIC flow, a file and 79 KB of store for four minutes).
check "back to idle within 60 s of the load's end (no orphans left to the retransmission limit)" yes \
  "$([ "$settled" = yes ] && [ "$settle_seconds" -le 60 ] && echo yes || echo "after $settle_seconds s")"
nic_state=$(grep counters "$work/nic.log" | tail -1)
for counter in flows open-files store-bytes chunks buffers-in-use queued-bytes; do
  check "NIC $counter back to 0" 0 "$(echo "$nic_state" | grep -oE "(^| )$counter=[0-9]*" | cut -d= -f2)"
done
if [ "$settled" != yes ]; then
  grep -o 'sessions .*' "$work/server.log" | tail -1 | sed 's/^/soak: server: /'
  grep 'queues:' "$work/nic.log" | tail -1 | sed 's/^/soak: NIC: /'
  # What is left, side by side: the host's connections (orphans included) and the NIC's flows.
  awk '/^State +Recv-Q/ { block = "" } /^State +Recv-Q/, /^iotcp-fileserver/ { block = block $0 "\n" } END { printf "%s", block }' \
    "$work/server.log" | head -20 | sed 's/^/soak: host: /'
  awk '/^Flow +Local/ { block = "" } /^Flow +Local/, /^$|counters/ { block = block $0 "\n" } END { printf "%s", block }' \
    "$work/nic.log" | head -20 | sed 's/^/soak: NIC flow: /'
fi
check "NIC descriptors back to idle ($idle_fds_nic)" "$idle_fds_nic" "$(descriptors "$nic_pid")"
check "file server descriptors back to idle ($idle_fds_server)" "$idle_fds_server" "$(descriptors "$server_pid")"
# Memory: allocators keep what they freed, so not back to the byte, but bounded: the NIC by its buffer pool
# (allocated in slabs as load asks, up to --store-limit + --read-memory, and kept) plus 64 MiB; the file
# server by 64 MiB.
pool_kib=$(( $(echo "$nic_state" | grep -o 'buffer-memory=[0-9]*' | cut -d= -f2) / 1024 ))
now_nic=$(rss "$nic_pid") now_server=$(rss "$server_pid")
check "NIC resident memory within its buffer pool ($((pool_kib / 1024)) MiB) and 64 MiB of idle" yes \
  "$([ $((now_nic - idle_rss_nic)) -lt $((pool_kib + 65536)) ] && echo yes || echo "$(( (now_nic - idle_rss_nic) / 1024 )) MiB over idle")"
check "file server resident memory within 64 MiB of idle" yes \
  "$([ $((now_server - idle_rss_server)) -lt 65536 ] && echo yes || echo "$(( (now_server - idle_rss_server) / 1024 )) MiB over idle")"
check "the server still serves" 200 "$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://10.89.0.2:8080/f65536.bin)"
check "the server still serves over IPv6" 200 "$(client curl -s -o /dev/null -w '%{http_code}' --max-time 5 'http://[fd89::2]:8080/f65536.bin')"
grep -o 'send-timeouts=[0-9]*\|header-timeouts=[0-9]*\|idle-timeouts=[0-9]*' "$work/server.log" | tail -3 | tr '\n' ' ' | sed 's/^/soak: server timeouts: /'; echo
checks_summary
