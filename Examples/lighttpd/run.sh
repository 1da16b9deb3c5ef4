#!/usr/bin/env bash
# Runs lighttpd on iotcp over DIRECTORY with Examples/lighttpd/lighttpd.conf, building it first if needed
# (Examples/lighttpd/build.sh: libiotcp with `swift build`, then Debian's lighttpd source patched; the first
# time takes minutes, later starts a few seconds). Embedded by default: the NIC half on a thread of
# lighttpd, its wire a TAP in network namespace "iotcp", the stack at 10.77.0.2. It says when it serves:
#
#   lighttpd on iotcp: serving DIR at http://10.77.0.2:8080/ in network namespace iotcp
#   try: ip netns exec iotcp curl -O http://10.77.0.2:8080/FILE
#
# Ctrl-C (SIGINT) is lighttpd's graceful stop (open connections finish first); SIGTERM stops at once. Either
# way the namespace goes with it. Logs: .build/lighttpd/logs/{error,access}.log.
#
# Usage (root): Examples/lighttpd/run.sh DIRECTORY [PORT]
#   CONFIGURATION=debug                 build libiotcp in debug rather than release (quicker the first time)
#   IOTCP_NIC=shm:PATH|rdma://IP:PORT   reach an iotcp-nic serving DIRECTORY instead (split)
#   IOTCP_NETNS, IOTCP_ADDRESS          the namespace and the stack's address/prefix (iotcp, 10.77.0.2/24)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: $0 DIRECTORY [PORT]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "lighttpd on iotcp: run as root (it makes a network namespace and a TAP)" >&2; exit 1; }
root=$(cd "$1" && pwd)
port=${2:-8080}
netns=${IOTCP_NETNS:-iotcp}
address=${IOTCP_ADDRESS:-10.77.0.2/24}
address=${address%%/*}
echo "lighttpd on iotcp: building (or checking) libiotcp and lighttpd..." >&2
lighttpd=$("$here/build.sh" | tail -1)
logs=$(cd "$here/../.." && pwd)/.build/lighttpd/logs
mkdir -p "$logs"

env IOTCP_NIC="${IOTCP_NIC:-embedded}" IOTCP_ROOT="$root" IOTCP_NETNS="$netns" IOTCP_ADDRESS="${IOTCP_ADDRESS:-$address/24}" \
  LIGHTTPD_ROOT="$root" LIGHTTPD_PORT="$port" LIGHTTPD_LOGS="$logs" "$lighttpd" -D -f "$here/lighttpd.conf" &
pid=$!
# Signals go to lighttpd, which stops and removes what the stack made.
trap 'kill -INT "$pid" 2>/dev/null' INT
trap 'kill -TERM "$pid" 2>/dev/null' TERM
ready=no
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || break
  code=$(ip netns exec "$netns" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$address:$port/" 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ] && { ready=yes; break; }
  sleep 0.2
done
if [ "$ready" = yes ]; then
  echo "lighttpd on iotcp: serving $root at http://$address:$port/ in network namespace $netns" >&2
  echo "try: ip netns exec $netns curl -O http://$address:$port/FILE    (logs in $logs; Ctrl-C stops)" >&2
else
  echo "lighttpd on iotcp: it did not come up; $logs/error.log and the lines above say why" >&2
  kill -TERM "$pid" 2>/dev/null || true
fi
# `wait` returns early when a trapped signal arrives: wait again until lighttpd has really gone.
while true; do
  status=0
  wait "$pid" || status=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
