#!/usr/bin/env bash
# The main job: builds iotcp, serves sample files with iotcp-fileserver (host engine and NIC data plane in
# this process, a TAP in a fresh network namespace as the wire), downloads one with curl from inside the
# namespace, checks it byte for byte, and says how to fetch more. Needs root; removes what it creates.
#
# Usage: scripts/demo.sh            (KEEP=1 keeps the server running until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "== building (release)"
swift build -c release --product iotcp-fileserver >/dev/null 2>&1 || swift build -c release --product iotcp-fileserver
work=$(mktemp -d)
server_pid=
cleanup() {
  # The server removes its namespace when it stops (and never takes over one another server is using).
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www"
echo '<h1>Hello from iotcp</h1>' > "$work/www/index.html"
head -c 50000000 /dev/urandom > "$work/www/movie.bin"

echo "== starting the file server"
.build/release/iotcp-fileserver --root "$work/www" --netns iotcp --address 10.77.0.2/24 2>"$work/access.log" &
server_pid=$!
for _ in $(seq 100); do ip netns list | grep -qw iotcp && ip netns exec iotcp ping -c1 -W1 10.77.0.2 >/dev/null 2>&1 && break; sleep 0.1; done
if ! kill -0 "$server_pid" 2>/dev/null; then
  server_pid=
  echo "the file server did not start:" >&2
  cat "$work/access.log" >&2
  exit 1
fi

echo "== curl in namespace iotcp fetches a 50 MB file"
ip netns exec iotcp curl -sS -o "$work/movie.got" -w 'HTTP %{http_code}, %{size_download} bytes in %{time_total} s\n' http://10.77.0.2:8080/movie.bin
if [ "$(sha256sum < "$work/www/movie.bin")" = "$(sha256sum < "$work/movie.got")" ]; then
  echo "sha256 matches: $(sha256sum < "$work/movie.got" | cut -c1-16)..."
else
  echo "sha256 MISMATCH" >&2
  exit 1
fi
ip netns exec iotcp curl -sS http://10.77.0.2:8080/
echo "== access log"
cat "$work/access.log"
cat <<'MORE'

More (while a server runs, e.g. KEEP=1 scripts/demo.sh, or .build/release/iotcp-fileserver --root DIR):
  ip netns exec iotcp curl -O http://10.77.0.2:8080/movie.bin
  ip netns exec iotcp curl -I http://10.77.0.2:8080/index.html
  scripts/e2e.sh          end-to-end checks with curl (sizes 0 B to 200 MiB, error statuses)
  scripts/bench.sh        checksum, codec, channel, engine and NIC-stack benchmarks
  scripts/compare.sh      iotcp beside lighttpd and nginx under wrk (Docs/benchmarks.md)
MORE
if [ "${KEEP:-0}" = 1 ]; then echo "serving until Ctrl-C"; wait "$server_pid"; fi
