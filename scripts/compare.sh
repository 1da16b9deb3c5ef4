#!/usr/bin/env bash
# iotcp beside lighttpd and nginx on the same machine, files and load. wrk runs in a client namespace (over
# the TAP to iotcp, over a veth to the Linux servers); servers are pinned to CPU 0, wrk to CPU 1.
#
# Three scenarios:
#   warm  the page cache holds every file (4 KiB, 64 KiB, 500 KiB, 10 MiB), each size requested alone:
#         iotcp embedded and split, lighttpd on iotcp (Examples/lighttpd: embedded, and split over shared
#         memory), stock lighttpd and nginx with sendfile (nginx keeping opens for 1 s, open_file_cache, as
#         iotcp-fileserver does by default).
#   https the warm files over TLS (TLS 1.3, AES-128-GCM for every server): iotcp embedded and split (handshake
#         on the host, records sealed by the NIC stack), nginx and lighttpd with OpenSSL. This kernel offers no
#         kTLS (tcp_available_ulp has no "tls"), so nginx and lighttpd encrypt in user space, as they must here.
#   short a new connection per request (wrk with `Connection: close`), 64 B and 4 KiB files, 100 connections:
#         iotcp embedded and split (handshakes answered and endings held by the NIC stack), lighttpd, nginx;
#         CPU microseconds per request beside CPU per GB.
#   proxy an L7 proxy in front of nginx (the backend, on the clients' side of the wire, pinned with wrk to CPU
#         1), 500 KiB and 10 MiB bodies, keep-alive and a new connection per request: iotcp-proxy splicing on
#         the NIC (embedded, and split over shared memory), HAProxy with splicing on (Debian's), nginx
#         proxy_pass; host CPU per GB against HAProxy's.
#   ipv6  iotcp embedded and split with clients over IPv4 and over IPv6 on the same run (4 KiB, 500 KiB,
#         10 MiB), nginx for scale.
#   ipv6-paired  the same without nginx, each server started once with both families and every cell measured
#         over IPv4 and IPv6 back to back in each of ROUNDS rounds (Docs/benchmarks/compare-ipv6-paired.*)
#   cold  a library of 500 KiB files four times larger than the page cache the servers may use (each server
#         runs in a memory cgroup with the same limit, caches dropped before each), requests spread over it
#         by a Zipf law: iotcp split (buffered reads through io_uring, and O_DIRECT), nginx with sendfile,
#         nginx with `aio threads`, lighttpd.
#
# Per run: Gbps, requests/s, latency p50/p99/max, wrk's errors, and CPU seconds per GB three ways: the host
# side (the server's process, for iotcp the application and host stack), the NIC stack (iotcp's NIC thread
# or iotcp-nic), and the whole server core (CPU 0's busy time from /proc/stat: user, system, irq, softirq,
# steal), which also holds the kernel's work for the server's side of the connections (TAP and veth delivery,
# TCP; each side's receive work is steered to its own core, RECEIVE_STEERING below). Memory per
# connection, and for iotcp split the NIC's user-space copies and disk reads per byte sent.
# Writes Docs/benchmarks/compare.json, compare.md and compare.png (or compare-cold.*).
#
# Usage (root): scripts/compare.sh [SECONDS]     SECONDS per run, default 10
#   SCENARIO=warm|cold|https|short|proxy|ipv6|ipv6-paired|both (default warm; both is warm and cold)  PROXY_MODES="keepalive close"  SIZES="4096 65536 512000 10485760"  CONNECTIONS="100 1600"
#   SERVERS="..." (default per scenario; iotcp-embedded-after-ack is the file server handing a closed
#                connection to the NIC only once its response is acknowledged, --endings-after-acknowledgment)
#   COLD_CACHE_MIB=256  COLD_FACTOR=4  ZIPF=0.9
#   ROUNDS=N     measures every cell N times, each round starting at the next server, and reports medians
#                (with each cell's range) instead of single runs (warm, https, short, proxy)
#   RECEIVE_STEERING=off  leaves the kernel's receive work on the sending side's CPU (the clients' on the
#                server core, the Linux servers' own on the clients'), as every run before 2026-12-05
#   PROFILE=DIR  records CPU 0 with `perf record -g` during each run into DIR (perf's cost then skews the
#                figures: profile and measure in separate runs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
duration=${1:-10}
scenario=${SCENARIO:-warm}
connections=(${CONNECTIONS:-100 1600})
missing=()
for tool in lighttpd nginx gnuplot python3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "$scenario" = proxy ]; then command -v haproxy >/dev/null || missing+=(haproxy); fi
[ -e /usr/lib/lighttpd/mod_openssl.so ] || missing+=(lighttpd-mod-openssl)
if [ ${#missing[@]} -gt 0 ]; then
  packages=("${missing[@]/gnuplot/gnuplot-nox}")
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
echo "== building (release)"
swift build -c release --product iotcp-fileserver >/dev/null 2>&1 || swift build -c release --product iotcp-fileserver
swift build -c release --product iotcp-nic >/dev/null 2>&1 || swift build -c release --product iotcp-nic
if [ "$scenario" = proxy ]; then
  swift build -c release --product iotcp-proxy >/dev/null 2>&1 || swift build -c release --product iotcp-proxy
fi
lighttpd_iotcp=
[ "$scenario" = https ] || [ "$scenario" = short ] || lighttpd_iotcp=$(CONFIGURATION=release Examples/lighttpd/build.sh 2>/dev/null | tail -1) || lighttpd_iotcp=
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p .build
work=$(mktemp -d -p "$PWD/.build" compare.XXXXXX)  # the build folder's file system takes O_DIRECT
chmod 755 "$work"  # nginx's and lighttpd's workers may run as another user
pids=()
cgroups=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for group in "${cgroups[@]}"; do rmdir "$group" 2>/dev/null || true; done
  ip netns del cmp-server 2>/dev/null || true
  ip netns del cmp-client 2>/dev/null || true
  ip netns del cmp-iotcp 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www" Docs/benchmarks

# The Linux servers' wire: a veth between a server namespace and the client namespace.
ip netns add cmp-server
ip netns add cmp-client
ip link add cmp-s type veth peer name cmp-c
ip link set cmp-s netns cmp-server
ip link set cmp-c netns cmp-client
ip -n cmp-server addr add 10.98.0.2/24 dev cmp-s
ip -n cmp-client addr add 10.98.0.1/24 dev cmp-c
ip -n cmp-client addr add 10.98.0.10/24 dev cmp-c  # the proxies' backend, beside the clients
for ns in cmp-server cmp-client; do ip -n "$ns" link set lo up; done
ip -n cmp-server link set cmp-s up
ip -n cmp-client link set cmp-c up

# Where the kernel does each side's receive work. Left alone, it handles a frame written to a veth or a TAP on
# the writer's CPU: the clients' (and a proxy's backend's) receive work lands on the server core, and a Linux
# server's own receive work on the clients' core. Receive packet steering puts each where it would be with the
# clients on other machines: what the client namespace receives on CPU 1 with wrk, what the server namespace
# receives on CPU 0 with the server (iotcp reads its frames from the TAP there itself).
# RECEIVE_STEERING=off keeps the writer's CPU (the placement of every run recorded before 2026-12-05).
steer_receives() {  # steer_receives NAMESPACE DEVICE CPU-MASK
  [ "${RECEIVE_STEERING:-on}" = off ] && return 0
  ip netns exec "$1" sh -c "for queue in /sys/class/net/$2/queues/rx-*; do echo $3 > \$queue/rps_cpus; done"
}
steer_receives cmp-client cmp-c 2
steer_receives cmp-server cmp-s 1

cat > "$work/lighttpd.conf" <<EOF
server.document-root = "$work/www"
server.bind = "10.98.0.2"
server.port = 8080
server.max-connections = 8192
server.max-fds = 16384
server.max-keep-alive-requests = 1000000
server.network-backend = "sendfile"
server.errorlog = "$work/lighttpd.log"
server.pid-file = "$work/lighttpd.pid"
EOF
# The same settings for lighttpd on iotcp, which listens on the stack's address (it binds no Linux address).
sed -e 's/^server.bind = .*/server.bind = "0.0.0.0"/' -e "s|lighttpd.pid|lighttpd-iotcp.pid|" \
  -e "s|lighttpd.log|lighttpd-iotcp.log|" "$work/lighttpd.conf" > "$work/lighttpd-iotcp.conf"
# HTTPS: one certificate for both servers' addresses; TLS 1.2 and 1.3, no tickets, and TLS 1.3's AES-128-GCM
# first everywhere (iotcp's server preference; OpenSSL's default would pick AES-256 for nginx and lighttpd).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 2 \
  -subj "/CN=compare" -addext "subjectAltName=IP:10.97.0.2,IP:10.98.0.2" 2>/dev/null
chmod 644 "$work/key.pem"
cat "$work/lighttpd.conf" - > "$work/lighttpd-tls.conf" <<EOF
server.modules += ("mod_openssl")
ssl.engine = "enable"
ssl.pemfile = "$work/cert.pem"
ssl.privkey = "$work/key.pem"
ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.2", "Ciphersuites" => "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "Options" => "-SessionTicket")
EOF
nginx_conf() {  # nginx_conf FILE EXTRA-HTTP-DIRECTIVES [LISTEN-EXTRA]
  cat > "$1" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 8192; use epoll; }
$( [ -n "$2" ] && echo "thread_pool default threads=4 max_queue=65536;" )
http {
  sendfile on; tcp_nopush on; access_log off; keepalive_requests 1000000; $2
  # Opens kept for reuse, as iotcp-fileserver keeps them by default (--open-file-cache 1).
  open_file_cache max=1024 inactive=20s; open_file_cache_valid 1s;
  client_body_temp_path $work/nginx-body; proxy_temp_path $work/nginx-proxy; fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi; scgi_temp_path $work/nginx-scgi;
  server { listen 10.98.0.2:8080 ${3:-}; root $work/www; }
}
EOF
}
nginx_conf "$work/nginx.conf" ""
nginx_conf "$work/nginx-aio.conf" "aio threads;"
nginx_conf "$work/nginx-tls.conf" "ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384;" ssl

# cpu_ticks PID...: user + system clock ticks of every thread of these processes; with NAME=..., only
# threads named NAME; with EXCEPT=..., all but those.
cpu_ticks() {
  local total=0 pid task comm
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*; do
      comm=$(cat "$task/comm" 2>/dev/null || true)
      if [ -n "${NAME:-}" ] && [ "$comm" != "$NAME" ]; then continue; fi
      if [ -n "${EXCEPT:-}" ] && [ "$comm" = "$EXCEPT" ]; then continue; fi
      total=$((total + $(awk '{print $14 + $15}' "$task/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
# core_ticks CPU: busy clock ticks of one CPU since boot (user nice system irq softirq steal; not idle, iowait).
core_ticks() { awk -v cpu="cpu$1" '$1 == cpu {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
rss_kib() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0))); done; echo "$total"; }

# in_cgroup NAME COMMAND...: runs COMMAND inside memory cgroup NAME (made by `make_cgroup`), when set.
make_cgroup() {  # make_cgroup NAME BYTES: a memory cgroup with that limit, page cache included; prints its path
  local group=/sys/fs/cgroup/memory/iotcp-cmp-$1
  [ -d /sys/fs/cgroup/memory ] || { echo "compare: no memory cgroup controller (cgroup v1 memory) here" >&2; return 1; }
  mkdir -p "$group"
  echo "$2" > "$group/memory.limit_in_bytes"
  cgroups+=("$group")
  echo "$group"
}
run_in() {  # run_in CGROUP-PATH-OR-EMPTY COMMAND...: (in a subshell) joins the cgroup, then becomes the command
  local group=$1; shift
  [ -n "$group" ] && echo "$BASHPID" > "$group/cgroup.procs"
  exec "$@"
}

# start SERVER [CGROUP]: starts it pinned to CPU 0; sets server_pids (the host side's CPU), nic_pids (the NIC
# stack's, split), nic_thread (the NIC thread's name, embedded), nic_log, client_ns and url_base.
start() {
  local group=${2:-}
  server_pids=() nic_pids=() nic_thread= nic_log=
  local iotcp_cold=() iotcp_tls=() scheme=http
  [ "$scenario_now" = cold ] && iotcp_cold=(--store-limit 0 --retransmit bufferless --read-memory $((32 << 20)))
  [ "$scenario_now" = https ] && iotcp_tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem") scheme=https
  # NAME-ipv6: the same server given both families, its clients coming over IPv6.
  local address=10.97.0.2/24 host=10.97.0.2
  case $1 in *-ipv6) address=10.97.0.2/24,fd97::2/64 host='[fd97::2]' ;; esac
  case ${1%-ipv6} in
    iotcp-embedded|iotcp-embedded-after-ack)
      # -after-ack: endings handed to the NIC only once the response is acknowledged (the behaviour before
      # endings with data), for an A/B in one run.
      local late=()
      [ "${1%-ipv6}" = iotcp-embedded-after-ack ] && late=(--endings-after-acknowledgment)
      (run_in "$group" taskset -c 0 .build/release/iotcp-fileserver --root "$work/www" --netns cmp-iotcp --address "$address" --quiet \
        "${iotcp_cold[@]}" "${iotcp_tls[@]}" "${late[@]}" >"$work/iotcp.out" 2>"$work/iotcp.log") &
      server_pids=($!) nic_thread=iotcp-nic client_ns=cmp-iotcp url_base=$scheme://$host:8080 ;;
    iotcp-split|iotcp-split-direct|iotcp-split-nomap)
      local direct=()
      [ "$1" = iotcp-split-direct ] && direct=(--direct-io)
      [ "$1" = iotcp-split-nomap ] && direct=(--no-map-files)
      (run_in "$group" taskset -c 0 .build/release/iotcp-nic --export-root "$work/www" --channel "shm:$work/nic.sock" --netns cmp-iotcp \
        --address "$address" --once "${iotcp_cold[@]}" "${direct[@]}" >"$work/nic.out" 2>"$work/nic.log") &
      nic_pids=($!) nic_log=$work/nic.log
      for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
      (run_in "$group" taskset -c 0 .build/release/iotcp-fileserver --nic "shm:$work/nic.sock" --netns cmp-iotcp --address "$address" \
        --quiet "${iotcp_tls[@]}" >"$work/iotcp.out" 2>"$work/iotcp.log") &
      server_pids=($!) client_ns=cmp-iotcp url_base=$scheme://$host:8080 ;;
    lighttpd-iotcp|lighttpd-iotcp-split)
      [ -x "$lighttpd_iotcp" ] || { echo "compare: lighttpd on iotcp did not build (Examples/lighttpd/build.sh)" >&2; return 1; }
      local nic=embedded
      if [ "$1" = lighttpd-iotcp-split ]; then
        (run_in "$group" taskset -c 0 .build/release/iotcp-nic --export-root "$work/www" --channel "shm:$work/nic.sock" --netns cmp-iotcp \
          --address 10.97.0.2/24 --once "${iotcp_cold[@]}" >"$work/nic.out" 2>"$work/nic.log") &
        nic_pids=($!) nic_log=$work/nic.log nic="shm:$work/nic.sock"
        for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
      fi
      (run_in "$group" env IOTCP_NIC="$nic" IOTCP_ROOT="$work/www" IOTCP_NETNS=cmp-iotcp IOTCP_ADDRESS=10.97.0.2/24 \
        taskset -c 0 "$lighttpd_iotcp" -D -f "$work/lighttpd-iotcp.conf" >"$work/iotcp.out" 2>"$work/iotcp.log") &
      server_pids=($!) client_ns=cmp-iotcp url_base=http://10.97.0.2:8080
      [ "$nic" = embedded ] && nic_thread=iotcp-nic ;;
    lighttpd)
      local conf=$work/lighttpd.conf
      [ "$scheme" = https ] && conf=$work/lighttpd-tls.conf
      (run_in "$group" ip netns exec cmp-server taskset -c 0 lighttpd -D -f "$conf") &
      server_pids=($!) client_ns=cmp-client url_base=$scheme://10.98.0.2:8080 ;;
    iotcp-proxy|iotcp-proxy-split)
      local nic=()
      mkdir -p "$work/empty"
      if [ "$1" = iotcp-proxy-split ]; then
        (run_in "$group" taskset -c 0 .build/release/iotcp-nic --export-root "$work/empty" --channel "shm:$work/nic.sock" --netns cmp-iotcp \
          --address 10.97.0.2/24 --once >"$work/nic.out" 2>"$work/nic.log") &
        nic_pids=($!) nic_log=$work/nic.log nic=(--nic "shm:$work/nic.sock")
        for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
      fi
      (run_in "$group" taskset -c 0 .build/release/iotcp-proxy --netns cmp-iotcp --address 10.97.0.2/24 --backend 10.97.0.10:8081 \
        --quiet "${nic[@]}" >"$work/iotcp.out" 2>"$work/iotcp.log") &
      server_pids=($!) client_ns=cmp-iotcp url_base=http://10.97.0.2:8080
      [ "$1" = iotcp-proxy ] && nic_thread=iotcp-nic
      for _ in $(seq 100); do grep -q "proxying http://" "$work/iotcp.out" 2>/dev/null && break; sleep 0.1; done
      # The backend on the clients' side of the TAP, as it is on the clients' side of the veth for the others.
      ip -n cmp-iotcp addr add 10.97.0.10/24 dev "$(ip -n cmp-iotcp -br link | awk '/^iotcp/ {print $1}' | head -1)"
      start_backend cmp-iotcp 10.97.0.10 ;;
    haproxy)
      start_backend cmp-client 10.98.0.10
      (run_in "$group" ip netns exec cmp-server taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1) &
      server_pids=($!) client_ns=cmp-client url_base=http://10.98.0.2:8080 ;;
    nginx-proxy)
      start_backend cmp-client 10.98.0.10
      (run_in "$group" ip netns exec cmp-server taskset -c 0 nginx -c "$work/nginx-proxy.conf") &
      sleep 0.5
      master=$(pgrep -f "nginx -c $work/nginx-proxy.conf" | head -1)
      server_pids=($master $(pgrep -P "$master" | tr '\n' ' ')) client_ns=cmp-client url_base=http://10.98.0.2:8080 ;;
    nginx|nginx-aio)
      local conf=$work/nginx.conf
      [ "$1" = nginx-aio ] && conf=$work/nginx-aio.conf
      [ "$scheme" = https ] && conf=$work/nginx-tls.conf
      (run_in "$group" ip netns exec cmp-server taskset -c 0 nginx -c "$conf") &
      sleep 0.5
      master=$(pgrep -f "nginx -c $conf" | head -1)
      server_pids=($master $(pgrep -P "$master" | tr '\n' ' ')) client_ns=cmp-client url_base=$scheme://10.98.0.2:8080 ;;
  esac
  pids+=("${server_pids[@]}" "${nic_pids[@]}")
  for _ in $(seq 100); do
    if ip netns exec "$client_ns" curl -sfk -o /dev/null --max-time 1 "$url_base/$probe" 2>/dev/null; then
      # iotcp's TAP exists once it serves: the clients' side of it, as the veth's.
      [ "$client_ns" = cmp-iotcp ] && steer_receives cmp-iotcp "$(ip -n cmp-iotcp -br link | awk '/^iotcp/ {print $1}' | head -1)" 2
      return 0
    fi
    sleep 0.1
  done
  echo "compare: $1 did not start" >&2
  cat "$work/iotcp.log" "$work/nic.log" "$work/haproxy.log" 2>/dev/null | tail -5 >&2
  return 1
}
stop() {
  for pid in "${server_pids[@]}" "${nic_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}" "${nic_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pkill -f "nginx -c $work/nginx" 2>/dev/null || true
  sleep 0.5
}
# start_backend NAMESPACE ADDRESS: nginx serving the files at ADDRESS:8081, pinned to CPU 1 (with wrk) so the
# server core holds only the proxy.
start_backend() {
  sed -e "s/10.98.0.2:8080/$2:8081/" -e "s|$work/nginx.pid|$work/nginx-backend.pid|" "$work/nginx.conf" > "$work/nginx-backend.conf"
  (ip netns exec "$1" taskset -c 1 nginx -c "$work/nginx-backend.conf") &
  for _ in $(seq 50); do ip netns exec "$1" curl -sf -o /dev/null --max-time 1 "http://$2:8081/$probe" && return 0; sleep 0.1; done
  echo "compare: the backend at $2 did not start" >&2
  return 1
}
# nic_counter NAME: the latest value iotcp-nic logged for a counter (after SIGUSR1).
nic_counter() { grep counters "$nic_log" | tail -1 | grep -o "$1=[0-9]*" | cut -d= -f2; }

# measure SERVER SIZE CONNECTIONS URL [WRK-ARGUMENTS...]: one wrk run; appends its JSON line to $results.
measure() {
  local server=$1 size=$2 conns=$3 url=$4; shift 4
  local idle_rss host_before nic_before core_before client_before
  idle_rss=$(rss_kib "${server_pids[@]}" "${nic_pids[@]}")
  if [ -n "$nic_thread" ]; then
    host_before=$(EXCEPT=$nic_thread cpu_ticks "${server_pids[@]}") nic_before=$(NAME=$nic_thread cpu_ticks "${server_pids[@]}")
  else
    host_before=$(cpu_ticks "${server_pids[@]}") nic_before=$(cpu_ticks "${nic_pids[@]}")
  fi
  core_before=$(core_ticks 0) client_before=$(core_ticks 1)
  local copies_before=0 read_before=0 out_before=0
  if [ -n "$nic_log" ]; then
    kill -USR1 "${nic_pids[0]}"; sleep 0.3
    copies_before=$(nic_counter payload-bytes-copied) read_before=$(nic_counter read-bytes) out_before=$(nic_counter bytes-out)
  fi
  ip netns exec "$client_ns" taskset -c 1 wrk -t 1 -c "$conns" -d "${duration}s" --timeout 10s --latency "$@" "$url" >"$work/wrk.out" 2>&1 &
  local wrk_pid=$!
  if [ -n "${PROFILE:-}" ]; then
    mkdir -p "$PROFILE"
    perf record -q -C 0 -g -o "$PROFILE/$scenario_now-$server-$size-$conns.perf" -- sleep $((duration * 2 / 3)) >/dev/null 2>&1 &
  fi
  sleep $((duration / 2))
  local load_rss
  load_rss=$(rss_kib "${server_pids[@]}" "${nic_pids[@]}")
  wait "$wrk_pid" || true
  local core_after client_after host_after nic_after
  core_after=$(core_ticks 0) client_after=$(core_ticks 1)
  if [ -n "$nic_thread" ]; then
    host_after=$(EXCEPT=$nic_thread cpu_ticks "${server_pids[@]}") nic_after=$(NAME=$nic_thread cpu_ticks "${server_pids[@]}")
  else
    host_after=$(cpu_ticks "${server_pids[@]}") nic_after=$(cpu_ticks "${nic_pids[@]}")
  fi
  local copies=-1 reads=-1 sent=0
  if [ -n "$nic_log" ]; then
    kill -USR1 "${nic_pids[0]}"; sleep 0.3
    copies=$(( $(nic_counter payload-bytes-copied) - copies_before )) reads=$(( $(nic_counter read-bytes) - read_before ))
    sent=$(( $(nic_counter bytes-out) - out_before ))
  fi
  python3 scripts/compare-parse.py "$server" "$size" "$conns" "$duration" "$(getconf CLK_TCK)" \
    "$((host_after - host_before))" "$((nic_after - nic_before))" "$((core_after - core_before))" "$((client_after - client_before))" \
    "$idle_rss" "$load_rss" "$copies" "$reads" "$sent" "$scenario_now" <"$work/wrk.out" | tee -a "$results" |
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("  %(size)9d B  %(connections)5d conns  %(gbps)6.2f Gbps  %(requests_per_second)8.0f req/s  p50 %(latency_p50_ms)7.2f ms  p99 %(latency_p99_ms)8.2f ms  host %(host_cpu_seconds_per_gb)6.3f  nic %(nic_cpu_seconds_per_gb)6.3f  core %(core_cpu_seconds_per_gb)6.3f s/GB  errors %(socket_errors)d" % r)'
}

# files SCENARIO OUTPUT SIZES SERVERS: each size as one file in the page cache, each server started once and
# measured on every size and connection count; the report goes to Docs/benchmarks/OUTPUT.{json,md,png}.
files() {
  scenario_now=$1
  local output=$2 sizes=($3) servers=($4)
  new_files "${sizes[@]}"
  each_server "$scenario_now" "" "${servers[@]}"
  report "$output"
}

# each_server LABEL SUFFIX SERVER...: each server started, measured on every size in `sizes` and connection
# count, and stopped, ROUNDS times (its results named SERVER+SUFFIX). Each round starts at the next server: on
# this machine a cell's rate drifts by up to a fifth from one minute to the next, and one server should not
# always be the one measured second.
each_server() {
  local label=$1 suffix=$2; shift 2
  local servers=("$@") rounds=${ROUNDS:-1} round
  for ((round = 0; round < rounds; round++)); do
    local shift=$((round % ${#servers[@]}))
    for server in "${servers[@]:shift}" "${servers[@]:0:shift}"; do
      echo "== $label: $server$([ "$rounds" -gt 1 ] && echo " (round $((round + 1)) of $rounds)")"
      start "$server"
      for size in "${sizes[@]}"; do
        for conns in "${connections[@]}"; do measure "$server$suffix" "$size" "$conns" "$url_base/file-$size.bin" "${wrk_extra[@]}"; done
      done
      stop
    done
  done
}

# new_files SIZE...: one file of each size in the page cache, the first the start probe, and no results yet.
new_files() {
  for size in "$@"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
  probe=file-$1.bin
  results="$work/results-$scenario_now.jsonl"
  : > "$results"
}

# report OUTPUT: the tables and chart of this run's results in Docs/benchmarks/OUTPUT.{json,md,png}.
report() {
  python3 scripts/compare-parse.py --report "$results" "Docs/benchmarks/$1"
  gnuplot "Docs/benchmarks/$1.gnuplot" && echo "compare: wrote Docs/benchmarks/$1.{json,md,png}"
}

wrk_extra=()
warm() {
  files warm compare "${SIZES:-4096 65536 512000 10485760}" \
    "${SERVERS:-iotcp-embedded iotcp-split lighttpd-iotcp lighttpd-iotcp-split lighttpd nginx}"
}

# The warm files over HTTPS: the sizes the TLS issue asks for, the servers that speak TLS.
https() {
  files https compare-https "${SIZES:-65536 512000 10485760}" "${SERVERS:-iotcp-embedded iotcp-split lighttpd nginx}"
}

cold() {
  scenario_now=cold
  local cache=$(( ${COLD_CACHE_MIB:-256} << 20 ))
  local count=$(( cache * ${COLD_FACTOR:-4} / 512000 ))
  local servers=(${SERVERS:-iotcp-split iotcp-split-direct nginx nginx-aio lighttpd})
  echo "== cold: $count files of 500 KiB ($(( count * 512000 >> 20 )) MiB) for a page cache of $(( cache >> 20 )) MiB"
  mkdir -p "$work/www/lib"
  head -c 512000 /dev/urandom > "$work/block"
  for index in $(seq 1 "$count"); do cp "$work/block" "$work/www/lib/f$index.bin"; done
  sync
  probe=lib/f1.bin
  # Requests spread by a Zipf law over the library: file i with weight 1/i^s.
  cat > "$work/zipf.lua" <<EOF
local n, s = $count, ${ZIPF:-0.9}
local cdf, total = {}, 0
for i = 1, n do total = total + 1 / (i ^ s); cdf[i] = total end
for i = 1, n do cdf[i] = cdf[i] / total end
math.randomseed(os.time())
request = function()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/lib/f" .. lo .. ".bin")
end
EOF
  results="$work/results-cold.jsonl"
  : > "$results"
  for server in "${servers[@]}"; do
    for conns in "${connections[@]}"; do
      echo "== cold: $server, $conns connections"
      sync; echo 3 > /proc/sys/vm/drop_caches
      local group
      group=$(make_cgroup "$server" "$cache")
      start "$server" "$group"
      measure "$server" 512000 "$conns" "$url_base/" -s "$work/zipf.lua"
      stop
      rmdir "$group" 2>/dev/null || true
    done
  done
  python3 scripts/compare-parse.py --report "$results" Docs/benchmarks/compare-cold
  gnuplot Docs/benchmarks/compare-cold.gnuplot && echo "compare: wrote Docs/benchmarks/compare-cold.{json,md,png}"
}

# The proxies: each in front of the same nginx backend, keep-alive and then a new connection per request.
# iotcp-proxy splices a client's connection to its backend's after the first request (later requests on it
# ride the splice); HAProxy and nginx read every request. All three accept a connection only with its
# first bytes (iotcp-proxy's default; HAProxy's `defer-accept`, nginx's `deferred`: TCP_DEFER_ACCEPT).
proxy() {
  scenario_now=proxy
  [ -n "${CONNECTIONS:-}" ] || connections=(100)
  local sizes=(${SIZES:-512000 10485760}) servers=(${SERVERS:-iotcp-proxy iotcp-proxy-split haproxy nginx-proxy})
  for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done
  probe=file-${sizes[0]}.bin
  # HAProxy sizes its descriptor need from maxconn (two per connection plus a pipe pair per four for
  # splicing) and refuses to start above the hard limit (20000 here), so maxconn stays well under it.
  cat > "$work/haproxy.cfg" <<CONF
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  option http-keep-alive
  option splice-request
  option splice-response
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend web
  bind 10.98.0.2:8080 defer-accept
  default_backend files
backend files
  http-reuse always
  server nginx 10.98.0.10:8081 maxconn 2000
CONF
  cat > "$work/nginx-proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx-proxy.pid;
error_log $work/nginx-proxy.log;
events { worker_connections 16384; use epoll; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx-body; proxy_temp_path $work/nginx-proxy-tmp; fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi; scgi_temp_path $work/nginx-scgi;
  upstream files { server 10.98.0.10:8081; keepalive 256; }
  server {
    listen 10.98.0.2:8080 deferred;
    location / { proxy_pass http://files; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_max_temp_file_size 0; }
  }
}
CONF
  results="$work/results-proxy.jsonl"
  : > "$results"
  for mode in ${PROXY_MODES:-keepalive close}; do
    local suffix=
    wrk_extra=()
    [ "$mode" = close ] && wrk_extra=(-H "Connection: close") suffix=-close
    each_server "proxy ($mode)" "$suffix" "${servers[@]}"
  done
  python3 scripts/compare-parse.py --report "$results" Docs/benchmarks/compare-proxy
  gnuplot Docs/benchmarks/compare-proxy.gnuplot && echo "compare: wrote Docs/benchmarks/compare-proxy.{json,md,png}"
}

# Short connections: every request on a new connection, closed by the server after the response.
short() {
  wrk_extra=(-H "Connection: close")
  [ -n "${CONNECTIONS:-}" ] || connections=(100)
  files short compare-short "${SIZES:-64 4096}" "${SERVERS:-iotcp-embedded iotcp-split lighttpd nginx}"
}

# IPv6 beside IPv4 on the same run: iotcp given both families, its clients over one or the other (the
# issue's bar: IPv6 within 5 % of IPv4); nginx (IPv4) for scale.
ipv6() {
  files ipv6 compare-ipv6 "${SIZES:-4096 512000 10485760}" \
    "${SERVERS:-iotcp-embedded iotcp-embedded-ipv6 iotcp-split iotcp-split-ipv6 nginx}"
}

# The same, paired: each server started once with both families, and every round measures each cell over
# IPv4 and over IPv6 back to back (which family goes first alternating), so the two meet the same process
# and the same minute. Medians of ROUNDS (default 5) rounds.
ipv6_paired() {
  scenario_now=ipv6
  local sizes=(${SIZES:-4096 512000 10485760}) servers=(${SERVERS:-iotcp-embedded iotcp-split}) rounds=${ROUNDS:-5} round
  local hosts=(10.97.0.2 '[fd97::2]')
  new_files "${sizes[@]}"
  for server in "${servers[@]}"; do
    echo "== ipv6, paired: $server (both families, $rounds rounds)"
    start "$server-ipv6"
    local labels=("$server" "$server-ipv6")
    for ((round = 0; round < rounds; round++)); do
      for size in "${sizes[@]}"; do
        for conns in "${connections[@]}"; do
          for family in $((round % 2)) $((1 - round % 2)); do
            measure "${labels[family]}" "$size" "$conns" "http://${hosts[family]}:8080/file-$size.bin"
          done
        done
      done
    done
    stop
  done
  report compare-ipv6-paired
}

case $scenario in
  warm) warm ;;
  ipv6) ipv6 ;;
  ipv6-paired) ipv6_paired ;;
  short) short ;;
  proxy) proxy ;;
  https) https ;;
  cold) cold ;;
  both) warm; cold ;;
  *) echo "compare: SCENARIO is warm, cold, https, short, proxy, ipv6, ipv6-paired or both" >&2; exit 2 ;;
esac
