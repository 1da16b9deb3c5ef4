#!/usr/bin/env bash
# Runs lighttpd on iotcp over DIRECTORY with Examples/lighttpd/lighttpd.conf, building it first if needed
# (Examples/lighttpd/build.sh). Embedded by default: the NIC half on a thread of lighttpd, its wire a TAP
# in network namespace "iotcp" at 10.77.0.2; try `ip netns exec iotcp curl http://10.77.0.2:8080/`.
#
# Usage (root): Examples/lighttpd/run.sh DIRECTORY [PORT]
#   IOTCP_NIC=shm:PATH|rdma://IP:PORT   reach an iotcp-nic serving DIRECTORY instead (split)
#   IOTCP_NETNS, IOTCP_ADDRESS          embedded: the namespace and the stack's address/prefix
# Logs go to .build/lighttpd/logs. Ctrl-C stops it and removes what it made.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: $0 DIRECTORY [PORT]" >&2; exit 2; }
root=$(cd "$1" && pwd)
lighttpd=$("$here/build.sh" | tail -1)
logs=$(cd "$here/../.." && pwd)/.build/lighttpd/logs
mkdir -p "$logs"
echo "lighttpd on iotcp: serving $root on port ${2:-8080} (logs in $logs)" >&2
exec env IOTCP_NIC="${IOTCP_NIC:-embedded}" IOTCP_ROOT="$root" LIGHTTPD_ROOT="$root" LIGHTTPD_PORT="${2:-8080}" \
  LIGHTTPD_LOGS="$logs" "$lighttpd" -D -f "$here/lighttpd.conf"
