#!/usr/bin/env bash
# HTTPS end to end: iotcp-fileserver --tls-cert/--tls-key, the handshake on the host and the file records
# sealed on the NIC, checked from the client's side with curl (TLS 1.3 and TLS 1.2, AES-128 and AES-256),
# openssl s_client and wrk: every size by sha256, Range, HEAD, 404, keep-alive, KeyUpdate; 1% and 5% loss with
# reordering (retransmitted records are sealed again and opened by the client's TLS), in the buffered and
# the bufferless store; clients that speak plain HTTP, send a truncated record, or abort the handshake with
# an alert are dropped and nothing leaks; then the same over split mode (iotcp-nic over shared memory).
#
# Usage (root): scripts/tls-e2e.sh [BINARY]   (default .build/debug/iotcp-fileserver; iotcp-nic beside it)
# Prints "tls: N passed, M failed" and exits non-zero on any failure. Removes everything it made.
set -uo pipefail
cd "$(dirname "$0")/.."
binary=${1:-.build/debug/iotcp-fileserver}
nic_binary=$(dirname "$binary")/iotcp-nic
namespace=iotcp-tls-$$
# TLS_FAMILY=ipv6: the same checks with the server on an IPv6 address alone.
case "${TLS_FAMILY:-ipv4}" in
  ipv4) address=10.89.0.2 host=10.89.0.2 address_option=10.89.0.2/24 ;;
  ipv6) address=fd89::2 host='[fd89::2]' address_option=fd89::2/64 ;;
  *) echo "TLS_FAMILY must be ipv4 or ipv6"; exit 2 ;;
esac
url=https://$host:8080
mkdir -p .build
work=$(mktemp -d -p "$PWD/.build" tls.XXXXXX)
server_pid=
nic_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$nic_pid" ] && kill "$nic_pid" 2>/dev/null && wait "$nic_pid" 2>/dev/null
  ip netns del "$namespace" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
source scripts/checks.sh tls

# A certificate for the server's address and a name, and one nobody trusts.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 2 -subj "/CN=iotcp.test" -addext "subjectAltName=IP:$address,DNS:iotcp.test" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/other-key.pem" -out "$work/other.pem" \
  -days 2 -subj "/CN=other" 2>/dev/null

mkdir -p "$work/www"
sizes=(0 1 1447 16383 16384 16385 65536 512000 10485760 209715200)
for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
# The downloads through the lossy wire: 20 MiB over IPv4 (about 14,500 segments: at 5% loss some 700 of them
# lost, records sealed again by the hundred); 10 MiB in the IPv6 run (loss recovery is the same code for both
# families, and the plain e2e runs lose 50 MiB over each). 50 MiB here cost 350 s of the test command's time.
lossy_mib=20; [ "${TLS_FAMILY:-ipv4}" = ipv6 ] && lossy_mib=10
head -c $((lossy_mib << 20)) /dev/urandom > "$work/www/lossy.bin"
echo '<h1>iotcp over TLS</h1>' > "$work/www/index.html"

client() { ip netns exec "$namespace" curl -sS --max-time 600 --cacert "$work/cert.pem" "$@"; }

start_server() {  # start_server NAME ARGUMENTS...
  local label=$1; shift
  "$binary" --root "$work/www" --netns "$namespace" --address "$address_option" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" "$@" \
    >"$work/$label.out" 2>"$work/$label.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving https://" "$work/$label.out" 2>/dev/null && break; sleep 0.1; done
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; server_pid=
}
start_split() {  # start_split NAME NIC-ARGUMENTS...
  local label=$1; shift
  "$nic_binary" --export-root "$work/www" --channel "shm:$work/nic.sock" --netns "$namespace" --address "$address_option" --once "$@" \
    >"$work/$label-nic.out" 2>"$work/$label-nic.log" &
  nic_pid=$!
  for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/$label-nic.out" 2>/dev/null && break; sleep 0.1; done
  "$binary" --nic "shm:$work/nic.sock" --netns "$namespace" --address "$address_option" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    >"$work/$label.out" 2>"$work/$label.log" &
  server_pid=$!
  for _ in $(seq 100); do grep -q "^serving https://" "$work/$label.out" 2>/dev/null && break; sleep 0.1; done
}
stop_split() {
  stop_server
  for _ in $(seq 50); do kill -0 "$nic_pid" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$nic_pid" 2>/dev/null; wait "$nic_pid" 2>/dev/null; nic_pid=
}
counter() {  # counter LOG NAME: the value of NAME in the last counters line of LOG
  grep -o "$2=[0-9]*" "$1" | tail -1 | cut -d= -f2
}

# Refusals before anything is set up.
bad=$("$binary" --root "$work/www" --netns "$namespace-bad" --address 10.91.0.2/24 --tls-cert "$work/missing.pem" --tls-key "$work/key.pem" 2>&1; echo "exit=$?")
check "a missing certificate is named, exit non-zero, no namespace made" yes \
  "$(echo "$bad" | grep -q "missing.pem" && ! echo "$bad" | grep -qx 'exit=0' && ! ip netns list | grep -qw "$namespace-bad" && echo yes || echo "$bad" | tail -2)"
bad=$("$binary" --root "$work/www" --netns "$namespace-bad" --address 10.91.0.2/24 --tls-cert "$work/cert.pem" --tls-key "$work/other-key.pem" 2>&1; echo "exit=$?")
check "a key that does not match the certificate is refused" yes \
  "$(echo "$bad" | grep -q "does not match" && ! echo "$bad" | grep -qx 'exit=0' && echo yes || echo "$bad" | tail -2)"

start_server embedded
check "ready line" "serving $url/ in network namespace $namespace" "$(head -1 "$work/embedded.out")"
for size in "${sizes[@]}"; do
  status=$(client --tlsv1.3 -o "$work/got" -w '%{http_code}' "$url/file-$size.bin")
  check "TLS 1.3: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
  status=$(client --tlsv1.2 --tls-max 1.2 -o "$work/got" -w '%{http_code}' "$url/file-$size.bin")
  check "TLS 1.2: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
done
file=$work/www/file-10485760.bin
for cipher in "--tlsv1.3 --tls13-ciphers TLS_AES_256_GCM_SHA384" "--tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256" \
              "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES256-GCM-SHA384" "--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256"; do
  # shellcheck disable=SC2086
  status=$(client $cipher -v -o "$work/got" -w '%{http_code}' "$url/file-10485760.bin" 2>"$work/verbose")
  used=$(grep -o 'SSL connection using .*' "$work/verbose" | sed 's/SSL connection using //')
  check "$cipher: 10 MiB ($used)" "200 $(sha256sum < "$file")" "$status $(sha256sum < "$work/got")"
done
check "ALPN: http/1.1 chosen" yes "$(client -v -o /dev/null "$url/index.html" 2>&1 | grep -q 'ALPN: server accepted http/1.1' && echo yes || echo no)"
check "GET / over TLS" "$(cat "$work/www/index.html")" "$(client "$url/")"
check "SNI: a name in the certificate is served" 200 \
  "$(client -o /dev/null -w '%{http_code}' --resolve "iotcp.test:8080:$host" https://iotcp.test:8080/index.html)"
check "HEAD: status and length" "200 65536" \
  "$(client -I -o /dev/null -w '%{http_code} ' "$url/file-65536.bin")$(client -sI "$url/file-65536.bin" | tr -d '\r' | awk '/^Content-Length/ {print $2}')"
check "404 for a missing file" 404 "$(client -o /dev/null -w '%{http_code}' "$url/missing")"
check "Range: bytes=1000-1999 of 10 MiB" "206 $(tail -c +1001 "$file" | head -c 1000 | sha256sum)" \
  "$(client -r 1000-1999 -o "$work/got" -w '%{http_code}' "$url/file-10485760.bin") $(sha256sum < "$work/got")"
check "Range: bytes=16380-50000 (across records)" "206 $(tail -c +16381 "$file" | head -c 33621 | sha256sum)" \
  "$(client -r 16380-50000 -o "$work/got" -w '%{http_code}' "$url/file-10485760.bin") $(sha256sum < "$work/got")"
check "keep-alive: two responses, one connection and one handshake" "200 200 1 0" \
  "$(client -o /dev/null -o /dev/null -w '%{http_code} ' "$url/file-512000.bin" "$url/file-16385.bin" | tr -s ' ')$(client -o /dev/null -o /dev/null -w '%{num_connects} ' "$url/index.html" "$url/index.html" | sed 's/ $//')"
printf 'GET /file-65536.bin HTTP/1.1\r\nHost: iotcp.test\r\nConnection: close\r\n\r\n' \
  | ip netns exec "$namespace" timeout 20 openssl s_client -connect "$host:8080" -servername iotcp.test -CAfile "$work/cert.pem" -quiet \
  >"$work/s_client.out" 2>/dev/null
check "openssl s_client: status line and body" "HTTP/1.1 200 OK $(sha256sum < "$work/www/file-65536.bin")" \
  "$(head -1 "$work/s_client.out" | tr -d '\r') $(python3 -c 'import sys, hashlib; d = open(sys.argv[1], "rb").read(); print(hashlib.sha256(d[d.find(b"\r\n\r\n") + 4:]).hexdigest() + "  -")' "$work/s_client.out")"
check "openssl s_client: the certificate verifies" yes \
  "$(printf 'GET /index.html HTTP/1.1\r\nHost: iotcp.test\r\nConnection: close\r\n\r\n' | ip netns exec "$namespace" timeout 20 openssl s_client -connect "$host:8080" -CAfile "$work/cert.pem" 2>&1 \
     | grep -q 'Verify return code: 0 (ok)' && echo yes || echo no)"
# A response with Connection: close ends with close_notify before the FIN (Python's TLS, told not to
# forgive a bare FIN, raises on a close without it).
for version in TLSv1_3 TLSv1_2; do
  check "close_notify ends a closing response ($version)" "200 clean" "$(ip netns exec "$namespace" python3 - "$address" "$work/cert.pem" "$version" <<'PY'
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
context.maximum_version = getattr(ssl.TLSVersion, sys.argv[3])
connection = context.wrap_socket(socket.create_connection((sys.argv[1], 8080), timeout=10), server_hostname=sys.argv[1],
                                  suppress_ragged_eofs=False)
connection.sendall(b"GET /index.html HTTP/1.1\r\nHost: iotcp.test\r\nConnection: close\r\n\r\n")
data = b""
try:
    while chunk := connection.recv(65536):
        data += chunk
    ending = "clean"
except ssl.SSLEOFError:
    ending = "no close_notify"
print(data.split(b" ")[1].decode() if data.startswith(b"HTTP/1.1") else "no response", ending)
PY
)"
done

# 1,500 pipelined requests in one TLS write (more than the server's 64 KiB of pending input): every one is
# answered, including those OpenSSL had already decrypted while the server's input was full.
check "1,500 pipelined requests over TLS, all answered" 1500 "$(ip netns exec "$namespace" python3 - "$address" "$work/cert.pem" <<'PY'
import socket, ssl, sys, time
context = ssl.create_default_context(cafile=sys.argv[2])
connection = context.wrap_socket(socket.create_connection((sys.argv[1], 8080), timeout=20), server_hostname=sys.argv[1])
connection.sendall(b"GET /index.html HTTP/1.1\r\nHost: iotcp.test\r\n\r\n" * 1500)
data, deadline = b"", time.time() + 20
while data.count(b"HTTP/1.1 200") < 1500 and time.time() < deadline:
    chunk = connection.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.count(b"HTTP/1.1 200"))
PY
)"

# Hostile and broken clients: each is dropped, and the server goes on serving.
failures_before=$(grep -c '^tls: ' "$work/embedded.log")
plain=$(client -o /dev/null -w '%{http_code}' "http://$host:8080/index.html" 2>/dev/null)
check "plain HTTP to the HTTPS port: no response, connection dropped" 000 "$plain"
check "a client that trusts another certificate aborts (alert), no response" 000 \
  "$(ip netns exec "$namespace" curl -s --max-time 10 --cacert "$work/other.pem" -o /dev/null -w '%{http_code}' "$url/index.html")"
# A ClientHello cut short, then the connection closed; and a record header promising more than comes.
ip netns exec "$namespace" python3 - "$address" <<'PY'
import socket, sys
for payload in (bytes([22, 3, 1, 0x02, 0x00]) + b"\x01\x00\x01\xfc" + b"\x03\x03" + b"x" * 20, bytes([23, 3, 3, 0x40, 0x00]) + b"y" * 100):
    s = socket.create_connection((sys.argv[1], 8080), timeout=5)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()
PY
sleep 0.5
check "after garbage, a truncated hello and a bad record, the server still serves" "200 $(sha256sum < "$work/www/file-512000.bin")" \
  "$(client -o "$work/got" -w '%{http_code}' "$url/file-512000.bin") $(sha256sum < "$work/got")"
check "TLS failures are logged without key material" yes \
  "$([ "$(grep -c '^tls: ' "$work/embedded.log")" -gt "$failures_before" ] && ! grep -qiE 'SECRET|master' "$work/embedded.log" && echo yes || echo "$(grep '^tls: ' "$work/embedded.log" | tail -2)")"

# wrk over HTTPS: 200 connections for 5 s, every response a 2xx, no socket error.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
wrk_out=$(ip netns exec "$namespace" wrk -t 2 -c 200 -d 5s --timeout 10s "$url/file-512000.bin" 2>&1)
echo "$wrk_out" | sed -n 's/^/tls: wrk: /p' | grep -E "Requests/sec|Transfer/sec|requests in|Socket errors|Non-2xx"
check "wrk https: requests completed" yes "$(echo "$wrk_out" | awk '/requests in/ {print ($1 > 50 ? "yes" : "only " $1)}')"
check "wrk https: no socket errors" "" "$(echo "$wrk_out" | grep 'Socket errors')"
check "wrk https: no non-2xx responses" "" "$(echo "$wrk_out" | grep 'Non-2xx')"
sleep 3  # wrk's 200 connections end with its run (resets for responses it stopped reading): let the server see them
stop_server
log=$work/embedded.log
check "embedded: the NIC sealed the records (TLS flows, records sealed)" yes \
  "$([ "$(counter "$log" tls-keyed)" -gt 0 ] && [ "$(counter "$log" records-sealed)" -gt 10000 ] && echo yes || grep counters "$log" | tail -1)"
check "embedded: no file open and no byte held on the NIC at exit" "open-files=0 store-bytes=0" \
  "open-files=$(counter "$log" open-files) store-bytes=$(counter "$log" store-bytes)"

# Plain HTTP on a second port only when asked: both ports serve the same files.
start_server plain --http-port 8081
check "--http-port: plain HTTP beside HTTPS" "200 200 $(sha256sum < "$work/www/file-512000.bin")" \
  "$(client -o /dev/null -w '%{http_code} ' "$url/file-512000.bin")$(client -o "$work/got" -w '%{http_code}' "http://$host:8081/file-512000.bin") $(sha256sum < "$work/got")"
check "--http-port: the ready lines say both" "serving $url/ in network namespace $namespace|serving http://$host:8081/ too" \
  "$(head -2 "$work/plain.out" | paste -sd '|')"
stop_server

# TLS 1.3 KeyUpdate: with an update every 4 records, each response on a kept-alive connection moves the
# client and the NIC to the next keys; every byte still opens and checks.
start_server keyupdate --tls-key-update-records 4
status=$(client --tlsv1.3 -o "$work/k1" -o "$work/k2" -o "$work/k3" -o "$work/k4" -w '%{http_code} ' \
  "$url/file-512000.bin" "$url/file-65536.bin" "$url/file-16385.bin" "$url/file-10485760.bin" | tr -s ' ')
check "KeyUpdate: four responses on one connection under four keys" "200 200 200 200 $(cat "$work/www/file-512000.bin" "$work/www/file-65536.bin" "$work/www/file-16385.bin" "$work/www/file-10485760.bin" | sha256sum)" \
  "$status$(cat "$work/k1" "$work/k2" "$work/k3" "$work/k4" | sha256sum)"
stop_server
check "KeyUpdate: the server sent them" yes "$([ "$(counter "$work/keyupdate.log" key-updates)" -ge 3 ] && echo yes || grep -o 'key-updates=[0-9]*' "$work/keyupdate.log")"

# Loss, reordering and duplication in both directions: retransmitted records are sealed again (from the
# buffer they left from, or read and sealed anew in the bufferless store) and opened by the client's TLS.
for setting in "0.01 buffered 1.3" "0.05 buffered 1.2" "0.05 bufferless 1.3" "0.01 bufferless 1.2"; do
  read -r loss store version <<<"$setting"
  start_server "faults-$loss-$store" --loss "$loss" --reorder 0.01 --duplicate 0.01 --seed 11 --retransmit "$store"
  versions="--tlsv$version"; [ "$version" = 1.2 ] && versions="--tlsv1.2 --tls-max 1.2"
  # shellcheck disable=SC2086
  status=$(client $versions --max-time 600 -o "$work/got" -w '%{http_code}' "$url/lossy.bin")
  stop_server
  log=$work/faults-$loss-$store.log
  check "TLS $version, $lossy_mib MiB at $loss loss, $store store" "200 $(sha256sum < "$work/www/lossy.bin")" "$status $(sha256sum < "$work/got")"
  if [ "$store" = bufferless ]; then
    check "... lost records were read and sealed again (records sealed > records in the file)" yes \
      "$([ "$(counter "$log" records-sealed)" -gt $((lossy_mib * 64)) ] && echo yes || echo "records-sealed=$(counter "$log" records-sealed)")"
  fi
done

# Split mode: the records are sealed in iotcp-nic, the host over shared memory.
start_split split
check "split: ready line" "serving $url/ in network namespace $namespace" "$(head -1 "$work/split.out")"
for size in 0 16384 16385 512000 10485760 209715200; do
  status=$(client --tlsv1.3 -o "$work/got" -w '%{http_code}' "$url/file-$size.bin")
  check "split, TLS 1.3: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
  status=$(client --tlsv1.2 --tls-max 1.2 -o "$work/got" -w '%{http_code}' "$url/file-$size.bin")
  check "split, TLS 1.2: GET $size bytes" "200 $(sha256sum < "$work/www/file-$size.bin")" "$status $(sha256sum < "$work/got")"
done
stop_split
check "split: iotcp-nic sealed the records and released everything when its host left" "yes open-files=0 store-bytes=0" \
  "$([ "$(counter "$work/split-nic.log" records-sealed)" -gt 10000 ] && echo yes || echo no) open-files=$(counter "$work/split-nic.log" open-files) store-bytes=$(counter "$work/split-nic.log" store-bytes)"
start_split split-faults --loss 0.05 --reorder 0.01 --duplicate 0.01 --seed 13 --retransmit bufferless
status=$(client --max-time 600 -o "$work/got" -w '%{http_code}' "$url/lossy.bin")
stop_split
check "split: $lossy_mib MiB at 5% loss, bufferless store" "200 $(sha256sum < "$work/www/lossy.bin")" "$status $(sha256sum < "$work/got")"
check "split: the namespace is removed" "" "$(ip netns list | grep -w "$namespace")"

checks_summary
