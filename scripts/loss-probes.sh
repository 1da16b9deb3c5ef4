#!/usr/bin/env bash
# Loss recovery features on and off, over a real wire: iotcp-fileserver (embedded) drops a share of the frames
# each way on its NIC (--loss), and curl in the server's namespace downloads one file again and again, each
# download on a new connection, so every response has a tail to lose. FEATURE picks what "without" turns off:
# `probes` (the default: tail loss probes, TCPConfiguration.tailLossProbes) or `lost-retransmissions` (lost
# retransmission detection in SACK recovery, TCPConfiguration.lostRetransmissionDetection). Rounds alternate
# the two servers (this machine's speed drifts from minute to minute). Prints the time a download takes
# (mean, median, p90, p99, worst) and the host's retransmission timeouts, probes and lost retransmissions
# found, each way.
#
# Usage: [FEATURE=probes|lost-retransmissions] scripts/loss-probes.sh [LOSS] [SIZE] [DOWNLOADS_PER_ROUND] [ROUNDS] [BINARY]
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
  *) echo "loss-probes: FEATURE is probes or lost-retransmissions, not '$FEATURE'" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "loss-probes: needs root (network namespaces)" >&2; exit 1; }
[ -x "$binary" ] || swift build -c release --product iotcp-fileserver >/dev/null

work=$(mktemp -d)
namespace=iotcp-probes-$$
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ip netns del "$namespace" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www"
head -c "$size" /dev/urandom > "$work/www/file.bin"
expected=$(sha256sum < "$work/www/file.bin")

# run MODE ROUND: one round of downloads against a fresh server; appends seconds per download to MODE.times
# and the server's counters to MODE.counters.
run() {
  local mode=$1 round=$2 flags=()
  [ "$mode" = without ] && flags=("$without_flag")
  "$binary" --root "$work/www" --netns "$namespace" --address 10.93.0.2/24 --quiet --loss "$loss" --seed "$round" \
    "${flags[@]}" >"$work/server.out" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "^serving http://" "$work/server.out" || { echo "loss-probes: the server did not start: $(tail -3 "$work/server.log")" >&2; exit 1; }
  for _ in $(seq "$downloads"); do
    local out
    out=$(ip netns exec "$namespace" curl -s --max-time 120 -o "$work/got" -w '%{http_code} %{time_total}' \
      "http://10.93.0.2:8080/file.bin")
    [ "${out% *}" = 200 ] && [ "$(sha256sum < "$work/got")" = "$expected" ] \
      || { echo "loss-probes: a download failed or differed ($out)" >&2; exit 1; }
    echo "${out#* }" >> "$work/$mode.times"
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  grep -o 'retransmission-timeouts=[0-9]* fast-recoveries=[0-9]* loss-probes=[0-9]* lost-retransmissions=[0-9]*' \
    "$work/server.log" >> "$work/$mode.counters"
  ip netns del "$namespace" 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then run without "$round"; run with "$round"; else run with "$round"; run without "$round"; fi
done

echo "loss-probes: without = ${without_flag}; $(awk -v l="$loss" 'BEGIN { print l * 100 }')% loss each way, $size-byte downloads, $((downloads * rounds)) each way, every one byte-exact"
for mode in without with; do
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
