#!/usr/bin/env bash
# End to end with real clients: starts iotcp-fileserver (embedded: host engine and NIC data plane in one
# process, a TAP in a fresh network namespace as the wire) on generated files, then downloads them with
# curl from inside the namespace and checks every byte by sha256, plus the error statuses; then reads a
# capture of a run with tshark, and downloads 50 MiB through the fault-injecting wire at 1% and 5% loss.
#
# Then the same in split mode: iotcp-nic as its own process owning the wire and the files, the file server
# reaching it over shared memory; and wrk with 1,600 connections.
#
# Usage (root): scripts/e2e.sh [BINARY]    (default: .build/debug/iotcp-fileserver; iotcp-nic beside it)
# Prints "e2e: N passed, M failed" and exits non-zero on any failure. Removes everything it made.
set -uo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/debug/iotcp-fileserver}
nic_binary=$(dirname "$binary")/iotcp-nic
namespace=iotcp-e2e-$$
# E2E_FAMILY=ipv6: the same checks with every client over IPv6 (the server given both families; ready lines
# and split mode's handshake still name its IPv4 address).
case "${E2E_FAMILY:-ipv4}" in
  ipv4) address=10.88.0.2/24 server=10.88.0.2 web=10.88.0.2 listed_server='10\.88\.0\.2' listed_client='10\.88\.0\.1' ;;
  ipv6) address=10.88.0.2/24,fd88::2/64 server=fd88::2 web='[fd88::2]' listed_server='\[fd88::2\]' listed_client='\[fd88::1\]' ;;
  *) echo "E2E_FAMILY must be ipv4 or ipv6"; exit 2 ;;
esac
export server
# Under the build folder: its file system takes O_DIRECT (a tmpfs /tmp would not), for the direct-I/O run.
mkdir -p .build
work=$(mktemp -d -p "$PWD/.build" e2e.XXXXXX)
server_pid=
nic_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$nic_pid" ] && kill "$nic_pid" 2>/dev/null && wait "$nic_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www/docs"
sizes=(0 1 1447 1448 1449 65535 65536 512000 10485760 209715200)
for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
echo '<h1>iotcp</h1>' > "$work/www/index.html"
ln -s /etc/passwd "$work/www/escape"

"$binary" --root "$work/www" --netns "$namespace" --address "$address" --metrics 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "^serving http://" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
if ! grep -q "^serving http://10.88.0.2:8080/ in network namespace $namespace" "$work/server.out"; then
  echo "e2e: the server did not start:"; cat "$work/server.out" "$work/server.log"; echo "e2e: 0 passed, 1 failed"; exit 1
fi

source scripts/checks.sh e2e
client() { ip netns exec "$namespace" curl -sS --max-time 600 "$@"; }

for size in "${sizes[@]}"; do
  status=$(client -o "$work/got" -w '%{http_code}' "http://$web:8080/file-$size.bin")
  check "GET $size bytes: status" 200 "$status"
  check "GET $size bytes: sha256" "$(sha256sum < "$work/www/file-$size.bin")" "$(sha256sum < "$work/got")"
done
check "GET /" "$(cat "$work/www/index.html")" "$(client http://$web:8080/)"
check "HEAD status and length" "200 65536" "$(client -I -o /dev/null -w '%{http_code} ' http://$web:8080/file-65536.bin)$(client -sI http://$web:8080/file-65536.bin | tr -d '\r' | awk '/^Content-Length/ {print $2}')"
check "404 for a missing file" 404 "$(client -o /dev/null -w '%{http_code}' http://$web:8080/missing)"
check "403 for a symlink out of the root" 403 "$(client -o /dev/null -w '%{http_code}' http://$web:8080/escape)"
check "403 for /../" 403 "$(client -o /dev/null -w '%{http_code}' --path-as-is http://$web:8080/../etc/passwd)"
check "403 for %2e%2e" 403 "$(client -o /dev/null -w '%{http_code}' --path-as-is "http://$web:8080/%2e%2e/%2e%2e/etc/passwd")"
check "405 for POST" 405 "$(client -o /dev/null -w '%{http_code}' -X POST http://$web:8080/index.html)"
check "keep-alive reuses the connection" "200 200 1 0" "$(client -o /dev/null -o /dev/null -w '%{http_code} ' http://$web:8080/index.html http://$web:8080/index.html | tr -s ' ')$(client -o /dev/null -o /dev/null -w '%{num_connects} ' http://$web:8080/index.html http://$web:8080/index.html | sed 's/ $//')"
size=10485760
check "Range: bytes=1000-1999 is 206 with those bytes" "206 $(tail -c +1001 "$work/www/file-$size.bin" | head -c 1000 | sha256sum)" \
  "$(client -o "$work/part" -w '%{http_code}' -H 'Range: bytes=1000-1999' http://$web:8080/file-$size.bin) $(sha256sum < "$work/part")"
check "Range: bytes=-500 is the last 500 bytes" "206 $(tail -c 500 "$work/www/file-$size.bin" | sha256sum)" \
  "$(client -o "$work/part" -w '%{http_code}' -H 'Range: bytes=-500' http://$web:8080/file-$size.bin) $(sha256sum < "$work/part")"
check "Content-Range of a partial response" "bytes 1000-1999/$size" \
  "$(client -o /dev/null -D - -H 'Range: bytes=1000-1999' http://$web:8080/file-$size.bin | tr -d '\r' | awk '/^Content-Range/ {print $2, $3}')"
check "416 for a range past the end" "416 bytes */$size" \
  "$(client -o /dev/null -D "$work/headers" -w '%{http_code}' -H "Range: bytes=$size-" http://$web:8080/file-$size.bin) $(tr -d '\r' < "$work/headers" | awk '/^Content-Range/ {print $2, $3}')"
modified=$(client -sI http://$web:8080/file-1449.bin | tr -d '\r' | sed -n 's/^Last-Modified: //p')
check "304 for If-Modified-Since equal to Last-Modified" 304 "$(client -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $modified" http://$web:8080/file-1449.bin)"
check "200 for If-Modified-Since before Last-Modified" 200 "$(client -o /dev/null -w '%{http_code}' -H 'If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT' http://$web:8080/file-1449.bin)"
check "414 for a request target over 8 KiB" 414 "$(client -o /dev/null -w '%{http_code}' "http://$web:8080/$(head -c 9000 /dev/zero | tr '\0' a)")"
check "431 for header fields over 16 KiB" 431 "$(client -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 17000 /dev/zero | tr '\0' b)" http://$web:8080/index.html)"
# Pipelining: three requests in one write, answered in order on the one connection.
pipelined=$(ip netns exec "$namespace" timeout 10 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080
  printf "GET /file-1.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3
  cat <&3' | grep -ao 'HTTP/1.1 [0-9][0-9][0-9]' | awk '{print $2}' | tr '\n' ' ')
slow=$(ip netns exec "$namespace" timeout 10 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080
  printf "GET /index.html HTTP/1.1\r\nHo" >&3; sleep 0.3; printf "st: x\r\nConnection: close\r\n\r\n" >&3; cat <&3' | tr -d '\r' | head -1)
check "a request arriving in two pieces is answered" "HTTP/1.1 200 OK" "$slow"
check "pipelined requests answered in order" "200 404 200 " "$pipelined"
check "ping answered by the NIC" 0 "$(ip netns exec "$namespace" ping -c 1 -W 2 "$server" >/dev/null; echo $?)"

# listing_shows NAME PID LOG HEADER LINE: with a connection held open from the namespace, SIGUSR1 to PID
# must print under a line matching HEADER (in LOG) a line matching LINE.
listing_shows() {
  ip netns exec "$namespace" timeout 5 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080; sleep 3' &
  local holder=$!
  sleep 1
  kill -USR1 "$2"
  sleep 0.5
  check "$1" yes "$(grep -A50 "$4" "$3" | grep -qE "$5" && echo yes || echo "no: $(grep -A3 "$4" "$3" | head -4)")"
  wait "$holder" 2>/dev/null
}
# The connection listing on SIGUSR1 (ss-style).
listing_shows "SIGUSR1 lists the held connection as established, ss-style" "$server_pid" "$work/server.log" \
  '^State  *Recv-Q  *Send-Q' "^established +0 +0 +$listed_server:8080 +$listed_client:[0-9]+"

# The Prometheus endpoint (--metrics 127.0.0.1:0 above): scraped with curl after the runs above (the
# counters are recorded once a second).
metrics_url=$(sed -n 's|^metrics at \(http://[0-9.:]*/metrics\)$|\1|p' "$work/server.out")
sleep 1.2
curl -sS --max-time 5 "$metrics_url" >"$work/metrics.txt" 2>&1
metric() { awk -v name="$1" '$1 == name { print int($2) }' "$work/metrics.txt"; }
check "metrics: the endpoint answers in Prometheus text format" yes \
  "$(grep -q '^# TYPE iotcp_host_connections_opened_total counter' "$work/metrics.txt" && echo yes || echo "no: $(head -c 300 "$work/metrics.txt")")"
check "metrics: connections opened counted (at least the ${#sizes[@]} downloads)" yes \
  "$([ "$(metric iotcp_host_connections_opened_total)" -ge "${#sizes[@]}" ] 2>/dev/null && echo yes || echo "$(metric iotcp_host_connections_opened_total)")"
check "metrics: the NIC's SENDs and bytes out counted" yes \
  "$([ "$(metric iotcp_nic_sends_total)" -gt 0 ] 2>/dev/null && [ "$(metric iotcp_nic_bytes_out_total)" -gt 209715200 ] 2>/dev/null && echo yes || echo "sends $(metric iotcp_nic_sends_total) bytes $(metric iotcp_nic_bytes_out_total)")"
check "metrics: connections by state, each state once" 10 "$(grep -c '^iotcp_host_connections{state=' "$work/metrics.txt")"
check "metrics: anything but /metrics is 404" 404 "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "${metrics_url%/metrics}/other")"

kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=
check "the namespace is removed on SIGTERM" "" "$(ip netns list | grep -w "$namespace")"
if grep -q "the NIC failed\|dropped a malformed" "$work/server.log"; then failed=$((failed + 1)); echo "e2e: FAIL NIC errors:"; grep "the NIC failed\|dropped a malformed" "$work/server.log" | head; fi

# start_server NAME EXTRA-ARGUMENTS...: a server on the same files, for the runs below.
start_server() {
  local label=$1; shift
  "$binary" --root "$work/www" --netns "$namespace" --address "$address" "$@" >"$work/$label.out" 2>"$work/$label.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/$label.out" 2>/dev/null && break; sleep 0.1; done
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=; }

# A capture of a run, read by tshark: no malformed frame, no bad checksum, in either direction. --pcap has the
# NIC cut real segments (it writes what crosses the wire); tshark's own errors fail the check, not hide it.
start_server capture --pcap "$work/run.pcap"
for size in 1449 65536 512000 10485760; do client -o /dev/null "http://$web:8080/file-$size.bin"; done
client -o /dev/null http://$web:8080/missing
stop_server
frames=$(tshark -r "$work/run.pcap" 2>"$work/tshark.err" | wc -l)
check "the capture holds the run" yes "$([ "$frames" -gt 1000 ] && echo yes || echo "only $frames frames: $(head -c 200 "$work/tshark.err")")"
expert=$(tshark -r "$work/run.pcap" -q -z expert 2>"$work/tshark.err"; echo "exit=$?")
check "tshark -z expert ran" "exit=0" "$(echo "$expert" | tail -1)"
check "tshark -z expert reports no errors" "" "$(echo "$expert" | grep -A20 '^Errors' | grep -E 'Malformed|checksum' | head -3)"
bad=$(tshark -r "$work/run.pcap" -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE \
  -Y 'tcp.checksum.status == 2 || ip.checksum.status == 2 || _ws.malformed' 2>"$work/tshark.err" | wc -l | tr -d ' '; echo "exit=${PIPESTATUS[0]}")
check "no frame fails its IP or TCP checksum" "0 exit=0" "$(echo $bad)"

# The production path, super-segments with checksums left to the kernel: captured by tshark inside the
# namespace, as the kernel received them. Nothing malformed, and frames larger than one segment were seen.
start_server gso
ip netns exec "$namespace" tshark -i any -w "$work/gso.pcap" -f "tcp port 8080" -q 2>"$work/tshark-gso.err" &
tshark_pid=$!
sleep 2
for size in 512000 10485760; do client -o /dev/null "http://$web:8080/file-$size.bin"; done
sleep 1
kill -INT "$tshark_pid"; wait "$tshark_pid" 2>/dev/null
stop_server
large=$(tshark -r "$work/gso.pcap" -Y 'frame.len > 1600' 2>/dev/null | wc -l)
check "super-segments reached the namespace (frames over 1,600 bytes)" yes "$([ "$large" -gt 10 ] && echo yes || echo "only $large")"
gso_expert=$(tshark -r "$work/gso.pcap" -q -z expert 2>&1; echo "exit=$?")
check "tshark reads the super-segment capture" "exit=0" "$(echo "$gso_expert" | tail -1)"
check "no malformed frame among super-segments" "" "$(echo "$gso_expert" | grep -A20 '^Errors' | grep -E 'Malformed' | head -3)"

# Hostile and careless clients, with short timeouts so the run stays short.
mkfifo "$work/www/pipe"
echo private > "$work/www/private" && chmod 000 "$work/www/private"
start_server hardening --header-timeout 2 --idle-timeout 3 --send-timeout 4
elapsed_ms() {  # elapsed_ms SCRIPT: runs SCRIPT (bash, fd 3 open to the server) in the namespace; ms until the server closed
  ip netns exec "$namespace" timeout 15 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080; '"$1"'; start=$(date +%s%N); cat <&3 >/dev/null; echo $(( ($(date +%s%N) - start) / 1000000 ))'
}
slowloris=$(elapsed_ms 'printf "GET /index.html HTTP/1.1\r\nHo" >&3')
check "a request head still incomplete after --header-timeout (2 s) is closed" yes \
  "$([ "${slowloris:-0}" -ge 1800 ] && [ "$slowloris" -lt 4500 ] && echo yes || echo "closed after ${slowloris:-no} ms")"
idle=$(elapsed_ms 'printf "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" >&3')
check "an idle keep-alive connection is closed after --idle-timeout (3 s)" yes \
  "$([ "${idle:-0}" -ge 2800 ] && [ "$idle" -lt 6000 ] && echo yes || echo "closed after ${idle:-no} ms")"
raw() {  # raw TEXT: sends TEXT on one connection and prints the response status codes
  ip netns exec "$namespace" timeout 10 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080; printf "$1" >&3; cat <&3' _ "$1" |
    grep -ao 'HTTP/1.1 [0-9][0-9][0-9]' | awk '{print $2}' | tr '\n' ' '
}
check "Content-Length beside Transfer-Encoding is refused, and the connection closed" "400 " \
  "$(raw 'GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\n\r\n')"
check "two different Content-Lengths are refused" "400 " "$(raw 'GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab')"
body='GET /missing HTTP/1.1\r\nHost: x\r\n\r\n'
check "a GET's body is read and thrown away, not taken for a request" "200 200 " \
  "$(raw "GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: $(printf "$body" | wc -c)\r\n\r\n${body}GET /file-1.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")"
check "an HTTP/1.1 request without Host is refused" "400 " "$(raw 'GET /index.html HTTP/1.1\r\n\r\n')"
check "an absolute-form target is served" "200 " "$(raw "GET http://$web:8080/index.html HTTP/1.1\r\nHost: $web\r\nConnection: close\r\n\r\n")"
start=$(date +%s%N)
check "a FIFO under the root is refused (403), at once" 403 "$(client -o /dev/null -w '%{http_code}' --max-time 5 http://$web:8080/pipe)"
check "... and the NIC goes on serving" 200 "$(client -o /dev/null -w '%{http_code}' --max-time 5 http://$web:8080/index.html)"
check "... all within 2 s" yes "$([ $(( ($(date +%s%N) - start) / 1000000 )) -lt 2000 ] && echo yes || echo no)"
check "a file its owner may not read (mode 000) is refused, though the NIC runs as root" 403 \
  "$(client -o /dev/null -w '%{http_code}' http://$web:8080/private)"
rss_before=$(awk '/^VmRSS/ {print $2}' /proc/"$server_pid"/status)
# A client that asks for 200 MiB, reads none of it and pushes junk: the server holds a bounded amount of
# it (the rest waits in TCP's window), and gives the stalled response up after --send-timeout (4 s).
ip netns exec "$namespace" timeout 8 bash -c 'exec 3<>/dev/tcp/'"$server"'/8080
  printf "GET /file-209715200.bin HTTP/1.1\r\nHost: x\r\n\r\n" >&3; head -c 209715200 /dev/zero >&3' 2>/dev/null
rss_after=$(awk '/^VmRSS/ {print $2}' /proc/"$server_pid"/status)
check "junk sent by a client that reads nothing grows the server by less than 16 MiB" yes \
  "$([ $((rss_after - rss_before)) -lt 16384 ] && echo yes || echo "grew $(( (rss_after - rss_before) / 1024 )) MiB")"
stop_server
check "the stalled response was given up after --send-timeout" yes \
  "$(grep -oE 'send-timeouts=[1-9][0-9]*' "$work/hardening.log" >/dev/null && echo yes || grep -o 'send-timeouts=[0-9]*' "$work/hardening.log")"
check "timeouts were counted (header, idle)" yes \
  "$(grep -qE 'header-timeouts=[1-9].*idle-timeouts=[1-9]' "$work/hardening.log" && echo yes || grep -o 'header-timeouts=[0-9]* idle-timeouts=[0-9]*' "$work/hardening.log")"
rm -f "$work/www/pipe" "$work/www/private"

# Out of descriptors: the server may hold few files; slow downloads take them all. The others must hear
# 503 (resource exhaustion), never 404 (as if the file were missing). Each download opens the file itself
# here (--open-file-cache 0); with the cache, the same downloads share one open and all get their file.
slow_downloads() {  # slow_downloads CODES-FILE: 40 slow downloads of one file, then one of another
  local server_args=$1 codes_file=$2
  (ulimit -n 48; exec "$binary" --root "$work/www" --netns "$namespace" --address "$address" $server_args >"$work/emfile.out" 2>"$work/emfile.log") &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/emfile.out" 2>/dev/null && break; sleep 0.1; done
  for index in $(seq 40); do
    client -o /dev/null -w '%{http_code}\n' --limit-rate 200k --max-time 4 "http://$web:8080/file-10485760.bin" >>"$codes_file" 2>/dev/null &
  done
  sleep 1.5
  extra=$(client -o /dev/null -w '%{http_code}' http://$web:8080/file-512000.bin)
  for _ in $(seq 60); do [ -z "$(jobs -p | grep -v "^$server_pid$")" ] && break; sleep 0.2; done
  codes=$(sort "$codes_file" | uniq -c | awk '{print $2}' | tr '\n' ' ')
}
slow_downloads "--open-file-cache 0" "$work/emfile-codes"
check "out of descriptors: 503 Service Unavailable, never 404" yes \
  "$( (echo " $codes $extra " | grep -q ' 503 ') && ! (echo " $codes $extra " | grep -q ' 404 ') && echo yes || echo "codes: $codes, then $extra")"
stop_server
check "... the server was not taken down by it" "" "$(grep -iE 'fatal|crash' "$work/emfile.log" | head -2)"
slow_downloads "" "$work/cached-codes"
check "with the open-file cache, the 40 slow downloads share one open: none refused (curl's 4 s cut them short)" "200 200" \
  "$(echo $codes) $extra"
stop_server
check "... 39 of the 41 requests answered from one cached open (the first opened it; the last asked for another file)" yes \
  "$(grep -q 'open-file-cache-hits=39 open-file-cache-misses=2' "$work/emfile.log" && echo yes || grep -o 'open-file-cache-[a-z]*=[0-9]*' "$work/emfile.log" | tr '\n' ' ')"

# A slow disk (30 ms a read): downloads arrive whole, the NIC reports its delay in every ECHO, and the host
# retransmits nothing (it takes the NIC's delay out of its RTT).
start_server slowdisk --disk-delay-ms 30 --no-map-files  # every byte read through the (slow) disk
for size in 512000 10485760; do
  status=$(client -o "$work/got" -w '%{http_code}' "http://$web:8080/file-$size.bin")
  check "slow disk: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
done
stop_server
check "slow disk: no retransmission timeout or fast recovery" "retransmission-timeouts=0 fast-recoveries=0" \
  "$(grep -o 'retransmission-timeouts=[0-9]* fast-recoveries=[0-9]*' "$work/slowdisk.log")"
delay=$(grep -o 'echo-delay-mean-us=[0-9]*' "$work/slowdisk.log" | cut -d= -f2)
check "slow disk: ECHO reports the disk's delay (mean >= 30 ms)" yes "$([ "${delay:-0}" -ge 30000 ] && echo yes || echo "mean ${delay:-none} us")"

# 50 MiB through the fault-injecting wire: loss, reordering and duplication in both directions.
head -c 52428800 /dev/urandom > "$work/www/fifty.bin"
for loss in 0.01 0.05; do
  start_server "faults-$loss" --loss "$loss" --reorder 0.01 --duplicate 0.01 --seed 7
  status=$(client --max-time 600 -o "$work/got" -w '%{http_code}' http://$web:8080/fifty.bin)
  stop_server
  check "50 MiB at $loss loss with reordering and duplication: status" 200 "$status"
  check "50 MiB at $loss loss with reordering and duplication: sha256" "$(sha256sum < "$work/www/fifty.bin")" "$(sha256sum < "$work/got")"
done
# wrk with 1,600 connections for 10 s: every response a 2xx, no socket error.
ulimit -n "$(ulimit -Hn)" 2>/dev/null  # wrk holds a descriptor per connection
start_server wrk --quiet
wrk_out=$(ip netns exec "$namespace" wrk -t 2 -c 1600 -d 10s --timeout 10s http://$web:8080/file-1449.bin 2>&1)
stop_server
echo "$wrk_out" | sed -n 's/^/e2e: wrk: /p' | grep -E "Requests/sec|Transfer/sec|requests in|Socket errors|Non-2xx"
check "wrk: requests completed" yes "$(echo "$wrk_out" | awk '/requests in/ {print ($1 > 1000 ? "yes" : "only " $1)}')"
check "wrk: no socket errors" "" "$(echo "$wrk_out" | grep 'Socket errors')"
check "wrk: no non-2xx responses" "" "$(echo "$wrk_out" | grep 'Non-2xx')"

# Split mode: iotcp-nic owns the TAP, the namespace and the files; the file server is the host half only,
# over shared memory.
start_split() {  # start_split NAME NIC-ARGUMENTS...
  local label=$1; shift
  "$nic_binary" --export-root "$work/www" --channel "shm:$work/nic.sock" --netns "$namespace" --address "$address" --once "$@" \
    >"$work/$label-nic.out" 2>"$work/$label-nic.log" &
  nic_pid=$!
  for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/$label-nic.out" 2>/dev/null && break; sleep 0.1; done
  "$binary" --nic "shm:$work/nic.sock" --netns "$namespace" --address "$address" >"$work/$label.out" 2>"$work/$label.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving http://" "$work/$label.out" 2>/dev/null && break; sleep 0.1; done
}
stop_split() {
  stop_server
  for _ in $(seq 50); do kill -0 "$nic_pid" 2>/dev/null || break; sleep 0.1; done  # --once: it leaves with its host
  kill -TERM "$nic_pid" 2>/dev/null; wait "$nic_pid" 2>/dev/null; nic_pid=
}
start_split split --metrics 127.0.0.1:0
check "split: the server reached iotcp-nic" yes "$(grep -q "^serving http://10.88.0.2:8080/" "$work/split.out" && echo yes || echo no)"
for size in "${sizes[@]}"; do
  status=$(client -o "$work/got" -w '%{http_code}' "http://$web:8080/file-$size.bin")
  check "split: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
done
check "split: 404" 404 "$(client -o /dev/null -w '%{http_code}' http://$web:8080/missing)"
check "split: 403 for a symlink out of the root" 403 "$(client -o /dev/null -w '%{http_code}' http://$web:8080/escape)"
# iotcp-nic's flow listing on SIGUSR1, and its Prometheus endpoint.
listing_shows "split: SIGUSR1 makes iotcp-nic list its flows, the held connection among them" "$nic_pid" "$work/split-nic.log" \
  '^Flow  *Local Address:Port' "^[0-9]+\\.[0-9]+ +$listed_server:8080 +$listed_client:[0-9]+"
nic_metrics=$(grep -o 'metrics at http://127\.0\.0\.1:[0-9]*/metrics' "$work/split-nic.log" | head -1 | sed 's/^metrics at //')
check "split: iotcp-nic serves its counters to Prometheus" yes \
  "$(curl -sS --max-time 5 "$nic_metrics" | awk '$1 == "iotcp_nic_sends_total" && $2 > 0 { found = 1 } END { print found ? "yes" : "no" }')"
# A second server started on the same namespace must not take it from the first (nor remove it on exit).
second=$("$nic_binary" --export-root "$work/www" --channel "shm:$work/second.sock" --netns "$namespace" --address "$address" --once 2>&1; echo "exit=$?")
check "a second iotcp-nic on a namespace in use is refused with what is in it, exit 1" yes \
  "$(echo "$second" | grep -q "network namespace $namespace is in use (interface" && echo "$second" | grep -qx 'exit=1' && echo yes || echo "$second" | tail -2)"
check "... and the first goes on serving" 200 "$(client -o /dev/null -w '%{http_code}' http://$web:8080/index.html)"
start=$(date +%s%N)
absent=$("$binary" --nic "shm:$work/absent.sock" --netns "$namespace-absent" --address 10.90.0.2/24 2>&1; echo "exit=$?")
check "--nic naming no socket is said at once, exit 1, no usage text" yes \
  "$(echo "$absent" | grep -q 'does not exist' && echo "$absent" | grep -qx 'exit=1' && ! echo "$absent" | grep -q USAGE \
     && [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 2000 ] && echo yes || echo "$absent" | tail -2)"
stop_split
check "split: iotcp-nic released every file and byte when its host left" "open-files=0 store-bytes=0" \
  "$(grep counters "$work/split-nic.log" | tail -1 | grep -o 'open-files=[0-9]*\|store-bytes=[0-9]*' | tr '\n' ' ' | sed 's/ $//')"
check "split: the namespace is removed" "" "$(ip netns list | grep -w "$namespace")"

# Direct I/O: the page cache bypassed, reads aligned into aligned buffers, every size byte-exact.
start_split direct --direct-io
for size in "${sizes[@]}"; do
  status=$(client -o "$work/got" -w '%{http_code}' "http://$web:8080/file-$size.bin")
  check "split, O_DIRECT: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
done
stop_split
check "split, O_DIRECT: every open was direct" "direct-fallbacks=0" "$(grep counters "$work/direct-nic.log" | tail -1 | grep -o 'direct-fallbacks=[0-9]*')"

for loss in 0.01 0.05; do  # the second with pread instead of io_uring, so both readers serve end to end
  start_split "split-faults-$loss" --loss "$loss" --reorder 0.01 --duplicate 0.01 --seed 9 $([ "$loss" = 0.05 ] && echo --disk pread)
  status=$(client --max-time 600 -o "$work/got" -w '%{http_code}' http://$web:8080/fifty.bin)
  stop_split
  check "split: 50 MiB at $loss loss with reordering and duplication" "200 $(sha256sum < "$work/www/fifty.bin")" "$status $(sha256sum < "$work/got")"
done

if [ "${E2E_FAMILY:-ipv4}" = ipv6 ]; then
  # IPv6 only: no IPv4 address anywhere, the ready line bracketed, the files byte-exact, embedded and split.
  address=fd88::2/64
  start_server ipv6-only
  check "IPv6 only: the ready line names the bracketed address" yes \
    "$(grep -q "^serving http://\[fd88::2\]:8080/ in network namespace $namespace" "$work/ipv6-only.out" && echo yes || head -2 "$work/ipv6-only.out")"
  check "IPv6 only: the namespace side has no IPv4 address" "" "$(ip -n "$namespace" -4 addr show | grep inet | grep -v " 127\.0\.0\.1/")"
  for size in 1449 10485760; do
    status=$(client -o "$work/got" -w '%{http_code}' "http://[fd88::2]:8080/file-$size.bin")
    check "IPv6 only: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
  done
  stop_server
  start_split ipv6-only-split
  status=$(client -o "$work/got" -w '%{http_code}' "http://[fd88::2]:8080/file-512000.bin")
  check "IPv6 only, split: GET 512000 bytes" "200 $(sha256sum < "$work/www/file-512000.bin")" "$status $(sha256sum < "$work/got")"
  stop_split
fi

checks_summary
