#!/usr/bin/env bash
# Captures real Linux frames for the wire-format tests: a kernel TCP client downloads a file from a
# kernel TCP server across a veth pair between two network namespaces, with checksum and segmentation
# offloads off (so every frame carries final checksums) and an nftables rule on the client that drops
# some data segments (so the client's ACKs carry SACK blocks). ARP and ping are captured too. The same
# download then runs over IPv6, with Neighbor Discovery and ping -6 before it, and two UDP datagrams to a
# closed port: one with a Destination Options header, one large enough to be sent in fragments (each
# answered, unless rate-limited, by a Destination Unreachable that quotes it).
#
# Usage (root): scripts/capture-fixtures.sh [OUTPUT.pcap]
# Writes Tests/IOTCPCommonTests/Fixtures/linux-tcp.pcap by default. Traffic stays inside the namespaces.
set -euo pipefail
out=${1:-"$(cd "$(dirname "$0")/.." && pwd)/Tests/IOTCPCommonTests/Fixtures/linux-tcp.pcap"}
server=iotcp-cap-srv client=iotcp-cap-cli
work=$(mktemp -d)
cleanup() {
  [ -n "${http_pid:-}" ] && kill "$http_pid" 2>/dev/null || true
  [ -n "${http6_pid:-}" ] && kill "$http6_pid" 2>/dev/null || true
  [ -n "${tshark_pid:-}" ] && kill "$tshark_pid" 2>/dev/null || true
  ip netns del "$server" 2>/dev/null || true
  ip netns del "$client" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for tool in ip nft ethtool tshark curl python3 ping; do
  command -v "$tool" >/dev/null || { echo "capture-fixtures: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

ip netns add "$server"
ip netns add "$client"
ip link add cap-srv netns "$server" type veth peer name cap-cli netns "$client"
ip -n "$server" addr add 10.78.0.1/24 dev cap-srv
ip -n "$client" addr add 10.78.0.2/24 dev cap-cli
ip -n "$server" addr add fd78::1/64 dev cap-srv nodad
ip -n "$client" addr add fd78::2/64 dev cap-cli nodad
for ns_dev in "$server cap-srv" "$client cap-cli"; do
  set -- $ns_dev
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off sg off >/dev/null 2>&1 || true
  ip -n "$1" link set "$2" up
  ip -n "$1" link set lo up
done
# Drop every 9th data segment from the server: the client then acknowledges with SACK blocks.
ip netns exec "$client" nft -f - <<'NFT'
table inet capture {
  chain input {
    type filter hook input priority 0;
    tcp sport 8080 meta length > 500 numgen inc mod 9 == 4 drop
  }
}
NFT

mkdir -p "$work/www"
head -c 60000 /dev/urandom > "$work/www/file.bin"
(cd "$work/www" && exec ip netns exec "$server" python3 -m http.server 8080 --bind 10.78.0.1 >/dev/null 2>&1) &
http_pid=$!
(cd "$work/www" && exec ip netns exec "$server" python3 -m http.server 8080 --bind fd78::1 >/dev/null 2>&1) &
http6_pid=$!
# The server must be up before the capture starts: the capture holds exactly one connection (the tests
# count its SYNs), not this probe's.
for _ in $(seq 50); do
  ip netns exec "$client" bash -c 'exec 3<>/dev/tcp/10.78.0.1/8080 && exec 4<>/dev/tcp/fd78::1/8080' 2>/dev/null && break
  sleep 0.1
done
ip netns exec "$client" tshark -q -i cap-cli -F pcap -w "$work/capture.pcap" >/dev/null 2>"$work/tshark.err" &
tshark_pid=$!
# tshark can take seconds to start (more on a loaded machine): traffic sent before it captures is lost, so
# wait for it to say it is capturing rather than for a fixed time.
for _ in $(seq 300); do grep -q "Capture started" "$work/tshark.err" 2>/dev/null && break; sleep 0.1; done
grep -q "Capture started" "$work/tshark.err" || { echo "capture-fixtures: tshark did not start capturing: $(cat "$work/tshark.err")" >&2; exit 1; }
# Forget the neighbour so the capture holds a real ARP request and reply.
ip -n "$client" neigh flush dev cap-cli
ip -n "$server" neigh flush dev cap-srv
ip netns exec "$client" ping -c 2 -i 0.2 10.78.0.1 >/dev/null
ip netns exec "$client" curl -sS --max-time 30 -o "$work/got.bin" http://10.78.0.1:8080/file.bin
cmp "$work/www/file.bin" "$work/got.bin"
ip -n "$client" neigh flush dev cap-cli
ip -n "$server" neigh flush dev cap-srv
ip netns exec "$client" ping -6 -c 2 -i 0.2 fd78::1 >/dev/null
ip netns exec "$client" curl -sS --max-time 30 -o "$work/got6.bin" 'http://[fd78::1]:8080/file.bin'
cmp "$work/www/file.bin" "$work/got6.bin"
ip netns exec "$client" python3 - <<'PY'
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
# A Destination Options header of eight bytes: next header and length (filled by the kernel), PadN of four.
s.sendmsg([b"options"], [(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))], 0, ("fd78::1", 9))
time.sleep(1.1)  # past the kernel's ICMPv6 error rate limit, so this one is answered too
s.sendto(b"x" * 3000, ("fd78::1", 9))
PY
sleep 1
kill "$tshark_pid"; wait "$tshark_pid" 2>/dev/null || true; tshark_pid=
mkdir -p "$(dirname "$out")"
cp "$work/capture.pcap" "$out"
echo "capture-fixtures: $(tshark -r "$out" 2>/dev/null | wc -l) frames in $out"
tshark -r "$out" -Y 'tcp.options.sack_le' 2>/dev/null | wc -l | sed 's/^/capture-fixtures: segments with SACK blocks: /'
