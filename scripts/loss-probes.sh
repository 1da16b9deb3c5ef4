#!/usr/bin/env bash
# Loss recovery features on and off, over a real wire: iotcp-fileserver (embedded) drops a share of the frames
# each way on its NIC (--loss), and curl in the server's namespace downloads one file again and again, each
# download on a new connection, so every response has a tail to lose. FEATURE picks what "without" turns off:
# `probes` (the default: tail loss probes, TCPConfiguration.tailLossProbes), `lost-retransmissions` (lost
# retransmission detection in SACK recovery, TCPConfiguration.lostRetransmissionDetection) or
# `reordering-window` (a hole below SACKed data counted lost a quarter RTT on, TCPConfiguration.reorderingWindow). Rounds alternate
# the two servers (this machine's speed drifts from minute to minute). Prints the time a download takes
# (mean, median, p90, p99, worst) and the host's retransmission timeouts, probes and lost retransmissions
# found, each way. With NGINX=1 each round also measures nginx (sendfile, one worker) in a namespace joined to
# curl's by a veth pair without segmentation offloads, where nftables drops the same share of TCP packets
# arriving on each side: the Linux stack's own recovery (RACK-TLP, PRR) at the same loss, its counters from
# nstat (TCPTimeouts, TCPSackRecovery, TCPLossProbes, TCPLostRetransmit). With BASE=PATH "without" is another
# build of the file server (an earlier commit's, say) with every feature at its default, instead of a flag.
#
# Usage: [FEATURE=probes|lost-retransmissions|reordering-window | BASE=OTHER_BINARY] [NGINX=1] scripts/loss-probes.sh [LOSS] [SIZE] [DOWNLOADS_PER_ROUND] [ROUNDS] [BINARY]
#   defaults: 0.02 (2% each way), 102400 bytes, 100, 3, .build/release/iotcp-fileserver (built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
loss=${1:-0.02}
size=${2:-102400}
downloads=${3:-100}
rounds=${4:-3}
binary=${5:-.build/release/iotcp-fileserver}
case ${FEATURE:-probes} in
  probes) without_flag=--no-tail-loss-probes ;;
  lost-retransmissions) without_flag=--no-lost-retransmission-detection ;;
  reordering-window) without_flag=--no-reordering-window ;;
  *) echo "loss-probes: FEATURE is probes, lost-retransmissions or reordering-window, not '$FEATURE'" >&2; exit 2 ;;
esac
if [ -n "${BASE:-}" ]; then
  [ -x "$BASE" ] || { echo "loss-probes: BASE '$BASE' is not an executable file server" >&2; exit 2; }
  without_flag="$BASE"
fi
[ "$(id -u)" = 0 ] || { echo "loss-probes: needs root (network namespaces)" >&2; exit 1; }
[ -x "$binary" ] || swift build -c release --product iotcp-fileserver >/dev/null

work=$(mktemp -d)
namespace=iotcp-probes-$$
server_pid=
modes=(without with)
if [ "${NGINX:-0}" = 1 ]; then
  command -v nginx >/dev/null && command -v nft >/dev/null && command -v nstat >/dev/null && command -v ethtool >/dev/null \
    || { echo "loss-probes: NGINX=1 needs nginx, nft, nstat and ethtool" >&2; exit 1; }
  modes+=(nginx)
fi
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ip netns del "$namespace" 2>/dev/null || true
  ip netns del "$namespace-s" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www"
chmod 755 "$work"  # nginx's worker runs as another user
head -c "$size" /dev/urandom > "$work/www/file.bin"
expected=$(sha256sum < "$work/www/file.bin")

# download NAMESPACE URL MODE: the round's downloads, each checked, their seconds appended to MODE.times.
download() {
  for _ in $(seq "$downloads"); do
    local out
    out=$(ip netns exec "$1" curl -s --max-time 120 -o "$work/got" -w '%{http_code} %{time_total}' "$2")
    [ "${out% *}" = 200 ] && [ "$(sha256sum < "$work/got")" = "$expected" ] \
      || { echo "loss-probes: a download failed or differed ($3: $out)" >&2; exit 1; }
    echo "${out#* }" >> "$work/$3.times"
  done
}

# run_nginx: one round against nginx over a veth pair dropping `loss` of the TCP packets arriving each side.
run_nginx() {
  local client=$namespace server=$namespace-s
  ip netns add "$client"; ip netns add "$server"
  ip link add lp0 netns "$client" type veth peer name lp1 netns "$server"
  ip -n "$client" addr add 10.93.1.2/24 dev lp0; ip -n "$server" addr add 10.93.1.1/24 dev lp1
  local threshold
  threshold=$(awk -v l="$loss" 'BEGIN { printf "%d", l * 100000 }')
  for side in "$client lp0" "$server lp1"; do
    set -- $side
    ip -n "$1" link set lo up; ip -n "$1" link set "$2" up
    # One drop is one segment, as on iotcp's NIC: no TSO/GSO super-packets, no GRO merging them back.
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
    ip netns exec "$1" nft add table inet loss
    ip netns exec "$1" nft add chain inet loss in '{ type filter hook input priority 0; }'
    ip netns exec "$1" nft add rule inet loss in meta l4proto tcp numgen random mod 100000 '<' "$threshold" drop
  done
  printf '%s\n' "worker_processes 1;" "daemon off;" "pid $work/nginx.pid;" "error_log $work/nginx.log;" \
    "events { worker_connections 1024; }" \
    "http { sendfile on; tcp_nopush on; access_log off; client_body_temp_path $work/nginx-body; proxy_temp_path $work/nginx-proxy;" \
    "  fastcgi_temp_path $work/nginx-fastcgi; uwsgi_temp_path $work/nginx-uwsgi; scgi_temp_path $work/nginx-scgi;" \
    "  server { listen 10.93.1.1:8080; root $work/www; } }" > "$work/nginx.conf"
  ip netns exec "$server" nstat -n >/dev/null  # the namespace's counters from here
  ip netns exec "$server" nginx -c "$work/nginx.conf" -p "$work" 2>>"$work/nginx.log" &
  server_pid=$!
  for _ in $(seq 50); do ip netns exec "$client" curl -s -o /dev/null --max-time 1 http://10.93.1.1:8080/ && break; sleep 0.1; done
  ip netns exec "$server" nstat -n >/dev/null
  download "$client" "http://10.93.1.1:8080/file.bin" nginx
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  ip netns exec "$server" nstat -z TcpExtTCPTimeouts TcpExtTCPSackRecovery TcpExtTCPLossProbes TcpExtTCPLostRetransmit \
    | awk '/TCPTimeouts/ { t = $2 } /TCPSackRecovery/ { r = $2 } /TCPLossProbes/ { p = $2 } /TCPLostRetransmit/ { l = $2 }
           END { printf "retransmission-timeouts=%d fast-recoveries=%d loss-probes=%d lost-retransmissions=%d\n", t, r, p, l }' \
    >> "$work/nginx.counters"
  ip netns del "$client"; ip netns del "$server"
}

# run MODE ROUND: one round of downloads against a fresh server; appends seconds per download to MODE.times
# and the server's counters to MODE.counters.
run() {
  local mode=$1 round=$2 flags=() server=$binary
  if [ "$mode" = nginx ]; then run_nginx; return; fi
  if [ "$mode" = without ]; then
    if [ -n "${BASE:-}" ]; then server=$BASE; else flags=("$without_flag"); fi
  fi
  "$server" --root "$work/www" --netns "$namespace" --address 10.93.0.2/24 --quiet --loss "$loss" --seed "$round" \
    "${flags[@]}" >"$work/server.out" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "^serving http://" "$work/server.out" || { echo "loss-probes: the server did not start: $(tail -3 "$work/server.log")" >&2; exit 1; }
  download "$namespace" "http://10.93.0.2:8080/file.bin" "$mode"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  grep -o 'retransmission-timeouts=[0-9]* fast-recoveries=[0-9]* loss-probes=[0-9]* lost-retransmissions=[0-9]*' \
    "$work/server.log" >> "$work/$mode.counters"
  ip netns del "$namespace" 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  # The servers in turn, in the reverse order every other round.
  order=()
  if [ $((round % 2)) = 1 ]; then order=("${modes[@]}"); else for ((i = ${#modes[@]} - 1; i >= 0; i--)); do order+=("${modes[$i]}"); done; fi
  for mode in "${order[@]}"; do run "$mode" "$round"; done
done

echo "loss-probes: without = ${without_flag}; $(awk -v l="$loss" 'BEGIN { print l * 100 }')% loss each way, $size-byte downloads, $((downloads * rounds)) each way, every one byte-exact"
for mode in "${modes[@]}"; do
  sort -n "$work/$mode.times" | awk -v mode="$mode" '
    { t[NR] = $1 * 1000; sum += $1 * 1000 }
    END {
      printf "loss-probes: %-7s mean %.1f ms, median %.1f, p90 %.1f, p99 %.1f, worst %.1f;", mode, sum / NR,
        t[int(NR * 0.5) + 1], t[int(NR * 0.9) + 1], t[int(NR * 0.99) + 1], t[NR]
    }'
  awk -F'[= ]' '{ rto += $2; fr += $4; probes += $6; lost += $8 }
    END { printf " host: %d RTOs, %d fast recoveries, %d probes, %d lost retransmissions found\n", rto, fr, probes, lost }' \
    "$work/$mode.counters"
done
