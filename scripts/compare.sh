#!/usr/bin/env bash
# iotcp beside lighttpd and nginx on the same machine, files and load: iotcp-fileserver embedded (NIC stack on
# a thread) and split (iotcp-nic as a process over shared memory), lighttpd and nginx with sendfile on Linux
# TCP. wrk runs in a client namespace (over the TAP to iotcp, over a veth to the Linux servers). Servers are
# pinned to CPU 0, wrk to CPU 1.
#
# Per configuration: Gbps, requests/s, latency p50/p99, CPU seconds per GB (iotcp: host side and NIC stack
# apart; lighttpd/nginx: all their processes, user + system), and resident memory per connection.
# Writes Docs/benchmarks/compare.json, compare.md and compare.png.
#
# Usage (root): scripts/compare.sh [SECONDS]     SECONDS per run, default 10
#   SIZES="4096 65536 512000 10485760" CONNECTIONS="100 1600" SERVERS="iotcp-embedded iotcp-split lighttpd nginx"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
duration=${1:-10}
sizes=(${SIZES:-4096 65536 512000 10485760})
connections=(${CONNECTIONS:-100 1600})
servers=(${SERVERS:-iotcp-embedded iotcp-split lighttpd nginx})
missing=()
for tool in lighttpd nginx gnuplot python3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  packages=("${missing[@]/gnuplot/gnuplot-nox}")
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi
echo "== building (release)"
swift build -c release --product iotcp-fileserver >/dev/null 2>&1 || swift build -c release --product iotcp-fileserver
swift build -c release --product iotcp-nic >/dev/null 2>&1 || swift build -c release --product iotcp-nic
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del cmp-server 2>/dev/null || true
  ip netns del cmp-client 2>/dev/null || true
  ip netns del cmp-iotcp 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www" Docs/benchmarks
chmod 755 "$work"  # nginx's and lighttpd's workers may run as another user
for size in "${sizes[@]}"; do head -c "$size" /dev/urandom > "$work/www/file-$size.bin"; done

# The Linux servers' wire: a veth between a server namespace and the client namespace.
ip netns add cmp-server
ip netns add cmp-client
ip link add cmp-s type veth peer name cmp-c
ip link set cmp-s netns cmp-server
ip link set cmp-c netns cmp-client
ip -n cmp-server addr add 10.98.0.2/24 dev cmp-s
ip -n cmp-client addr add 10.98.0.1/24 dev cmp-c
for ns in cmp-server cmp-client; do ip -n "$ns" link set lo up; done
ip -n cmp-server link set cmp-s up
ip -n cmp-client link set cmp-c up

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
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 8192; use epoll; }
http {
  sendfile on; tcp_nopush on; access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx-body; proxy_temp_path $work/nginx-proxy; fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi; scgi_temp_path $work/nginx-scgi;
  server { listen 10.98.0.2:8080; root $work/www; }
}
EOF

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
rss_kib() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0))); done; echo "$total"; }

# start SERVER: starts it pinned to CPU 0; sets server_pids (whose CPU is the host side), nic_pids (the
# NIC stack's, for split), nic_thread (the NIC thread's name, embedded), client_ns and url_base.
start() {
  server_pids=() nic_pids=() nic_thread=
  case $1 in
    iotcp-embedded)
      taskset -c 0 .build/release/iotcp-fileserver --root "$work/www" --netns cmp-iotcp --address 10.97.0.2/24 --quiet \
        >"$work/iotcp.out" 2>"$work/iotcp.log" &
      server_pids=($!) nic_thread=iotcp-nic client_ns=cmp-iotcp url_base=http://10.97.0.2:8080 ;;
    iotcp-split)
      taskset -c 0 .build/release/iotcp-nic --export-root "$work/www" --channel "shm:$work/nic.sock" --netns cmp-iotcp \
        --address 10.97.0.2/24 --once >"$work/nic.out" 2>"$work/nic.log" &
      nic_pids=($!)
      for _ in $(seq 100); do grep -q "^iotcp-nic: serving" "$work/nic.out" 2>/dev/null && break; sleep 0.1; done
      taskset -c 0 .build/release/iotcp-fileserver --nic "shm:$work/nic.sock" --netns cmp-iotcp --address 10.97.0.2/24 --quiet \
        >"$work/iotcp.out" 2>"$work/iotcp.log" &
      server_pids=($!) client_ns=cmp-iotcp url_base=http://10.97.0.2:8080 ;;
    lighttpd)
      ip netns exec cmp-server taskset -c 0 lighttpd -D -f "$work/lighttpd.conf" &
      server_pids=($!) client_ns=cmp-client url_base=http://10.98.0.2:8080 ;;
    nginx)
      ip netns exec cmp-server taskset -c 0 nginx -c "$work/nginx.conf" &
      sleep 0.5
      master=$(pgrep -f "nginx -c $work/nginx.conf" | head -1)
      server_pids=($master $(pgrep -P "$master" | tr '\n' ' ')) client_ns=cmp-client url_base=http://10.98.0.2:8080 ;;
  esac
  pids+=("${server_pids[@]}" "${nic_pids[@]}")
  for _ in $(seq 100); do
    ip netns exec "$client_ns" curl -sf -o /dev/null --max-time 1 "$url_base/file-${sizes[0]}.bin" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare: $1 did not start" >&2
  return 1
}
stop() {
  for pid in "${server_pids[@]}" "${nic_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${server_pids[@]}" "${nic_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pkill -f "nginx -c $work/nginx.conf" 2>/dev/null || true
  sleep 0.5
}

results="$work/results.jsonl"
: > "$results"
for server in "${servers[@]}"; do
  echo "== $server"
  start "$server"
  for size in "${sizes[@]}"; do
    for conns in "${connections[@]}"; do
      idle_rss=$(rss_kib "${server_pids[@]}" "${nic_pids[@]}")
      if [ -n "$nic_thread" ]; then
        host_before=$(EXCEPT=$nic_thread cpu_ticks "${server_pids[@]}") nic_before=$(NAME=$nic_thread cpu_ticks "${server_pids[@]}")
      else
        host_before=$(cpu_ticks "${server_pids[@]}") nic_before=$(cpu_ticks "${nic_pids[@]}")
      fi
      ip netns exec "$client_ns" taskset -c 1 wrk -t 1 -c "$conns" -d "${duration}s" --timeout 10s --latency \
        "$url_base/file-$size.bin" >"$work/wrk.out" 2>&1 &
      wrk_pid=$!
      sleep $((duration / 2))
      load_rss=$(rss_kib "${server_pids[@]}" "${nic_pids[@]}")
      wait "$wrk_pid" || true
      if [ -n "$nic_thread" ]; then
        host_after=$(EXCEPT=$nic_thread cpu_ticks "${server_pids[@]}") nic_after=$(NAME=$nic_thread cpu_ticks "${server_pids[@]}")
      else
        host_after=$(cpu_ticks "${server_pids[@]}") nic_after=$(cpu_ticks "${nic_pids[@]}")
      fi
      python3 scripts/compare-parse.py "$server" "$size" "$conns" "$duration" "$(getconf CLK_TCK)" \
        "$((host_after - host_before))" "$((nic_after - nic_before))" "$idle_rss" "$load_rss" <"$work/wrk.out" | tee -a "$results" |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("  %(size)9d B  %(connections)5d conns  %(gbps)6.2f Gbps  %(requests_per_second)9.0f req/s  p50 %(latency_p50_ms)7.2f ms  p99 %(latency_p99_ms)7.2f ms  host %(host_cpu_seconds_per_gb)6.2f s/GB  nic %(nic_cpu_seconds_per_gb)6.2f s/GB  errors %(socket_errors)d" % r)'
    done
  done
  stop
done
python3 scripts/compare-parse.py --report "$results" Docs/benchmarks/compare
gnuplot "Docs/benchmarks/compare.gnuplot" && echo "compare: wrote Docs/benchmarks/compare.{json,md,png}"
