#!/bin/sh
# /init of the RDMA testbed VM (built and booted by scripts/rdma-vm.sh). Prints "vm: PASS ..." and
# "vm: FAIL ..." lines, then "vm: N passed, M failed", and powers off. Each step runs under a timeout.
export PATH=/bin:/sbin
passed=0
failed=0
pass() { echo "vm: PASS $*"; passed=$((passed + 1)); }
fail() { echo "vm: FAIL $*"; failed=$((failed + 1)); }
check() { name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
finish() {
  echo "vm: $passed passed, $failed failed"
  sync
  poweroff -f
}
# A last watchdog inside the VM: whatever hangs, the VM ends.
(sleep 240; echo "vm: FAIL watchdog: the tests did not finish in 240 s"; echo "vm: 0 passed, 1 failed"; poweroff -f) &

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /dev/pts /run/netns
for module in $(cat /modules.order); do
  insmod "/lib/modules/$module" 2>/tmp/insmod.err || { grep -q "File exists" /tmp/insmod.err || { fail "insmod $module: $(cat /tmp/insmod.err)"; finish; }; }
done

# Two Soft-RoCE devices on the two ends of a veth pair. Both addresses are local, so by default the
# kernel would route between them over lo and rxe would loop back inside one device: policy routes send
# locally made packets to the other end's address out of the veth, so they really cross it.
/bin/ip link set lo up
/bin/ip link add va type veth peer name vb
/bin/ip addr add 10.99.0.1/24 dev va
/bin/ip addr add 10.99.0.2/24 dev vb
/bin/ip link set va up
/bin/ip link set vb up
for device in all default va vb; do
  echo 0 > /proc/sys/net/ipv4/conf/$device/rp_filter
  echo 1 > /proc/sys/net/ipv4/conf/$device/accept_local
done
/bin/ip rule add pref 100 iif lo to 10.99.0.1 lookup 100
/bin/ip rule add pref 101 iif lo to 10.99.0.2 lookup 101
/bin/ip route add 10.99.0.1 dev vb src 10.99.0.2 table 100
/bin/ip route add 10.99.0.2 dev va src 10.99.0.1 table 101
/bin/ip rule add pref 200 lookup local
/bin/ip rule del pref 0 lookup local
/bin/ip neigh replace 10.99.0.1 lladdr "$(cat /sys/class/net/va/address)" dev vb nud permanent
/bin/ip neigh replace 10.99.0.2 lladdr "$(cat /sys/class/net/vb/address)" dev va nud permanent
# The same over IPv6 (fd99::1 and fd99::2), for the channel between the halves over IPv6 (section 7): rxe
# keeps a GID for each address of its netdev, so rdma_cm reaches the other end by either family.
/bin/ip -6 addr add fd99::1/64 dev va nodad
/bin/ip -6 addr add fd99::2/64 dev vb nodad
/bin/ip -6 rule add pref 100 iif lo to fd99::1 lookup 100
/bin/ip -6 rule add pref 101 iif lo to fd99::2 lookup 101
/bin/ip -6 route add fd99::1 dev vb src fd99::2 table 100
/bin/ip -6 route add fd99::2 dev va src fd99::1 table 101
# rdma_cm checks an incoming request's device with a route lookup to the requester bound to that device,
# which carries no input interface (so the iif-lo rules above do not apply) and would find the local route.
/bin/ip -6 rule add pref 102 oif va to fd99::2 lookup 101
/bin/ip -6 rule add pref 103 oif vb to fd99::1 lookup 100
/bin/ip -6 rule add pref 200 lookup local
/bin/ip -6 rule del pref 0 lookup local
/bin/ip -6 neigh replace fd99::1 lladdr "$(cat /sys/class/net/va/address)" dev vb nud permanent
/bin/ip -6 neigh replace fd99::2 lladdr "$(cat /sys/class/net/vb/address)" dev va nud permanent
check "rxe0 on va" /bin/rdma link add rxe0 type rxe netdev va
check "rxe1 on vb" /bin/rdma link add rxe1 type rxe netdev vb

# The emulated NVMe disk, read-only: iotcp-nic serves its files.
check "the NVMe disk mounts" mount -t ext4 -o ro /dev/nvme0n1 /srv
[ "$failed" -eq 0 ] || finish

packets() { echo $(( $(cat /sys/class/net/va/statistics/rx_packets) + $(cat /sys/class/net/vb/statistics/rx_packets) )); }
wait_for() {  # FILE TEXT SECONDS
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}
start_host() {  # LOG (no timeout wrapper: $host must be the server itself; the VM's watchdog bounds it)
  /bin/iotcp-fileserver --nic rdma://10.99.0.1:7471 --rdma-source 10.99.0.2 --netns iotcp \
    --address 10.77.0.2/24 > "$1" 2>&1 &
  host=$!
}
download() {  # NAME -> sha256 on stdout
  timeout 60 /bin/ip netns exec iotcp wget -q -O - "http://10.77.0.2:8080/$1" | sha256sum | cut -d' ' -f1
}

# 1. The channel by itself: checked commands both ways over RDMA, with its figures.
before=$(packets)
timeout 60 /bin/iotcp-channel-demo serve --rdma rdma://10.99.0.1:7472 > /tmp/demo-nic.log 2>&1 &
demo=$!
timeout 60 /bin/iotcp-channel-demo exchange --rdma rdma://10.99.0.1:7472 --source 10.99.0.2 --count 200000 > /tmp/demo-host.log 2>&1
check "channel demo: 200000 SENDs checked and answered over RDMA" grep -q "received and checked 200000 ECHO" /tmp/demo-host.log
wait $demo
check "channel demo: the NIC side verified every SEND" grep -q "verified 200000 SEND commands" /tmp/demo-nic.log
sed 's/^/vm: figures: /' /tmp/demo-host.log
crossed=$(( $(packets) - before ))
check "channel demo: RDMA packets crossed the veth ($crossed)" [ "$crossed" -gt 100 ]
# The same with 4 KiB messages (more messages, fewer commands each), and with busy polling.
timeout 60 /bin/iotcp-channel-demo serve --rdma rdma://10.99.0.1:7473 > /tmp/demo-nic-small.log 2>&1 &
demo=$!
timeout 60 /bin/iotcp-channel-demo exchange --rdma rdma://10.99.0.1:7473 --source 10.99.0.2 --count 50000 \
  --slot-bytes 4096 --slots 16 > /tmp/demo-host-small.log 2>&1
wait $demo
check "channel demo, 4 KiB messages: 50000 SENDs checked and answered" grep -q "received and checked 50000 ECHO" /tmp/demo-host-small.log
sed 's/^/vm: figures: /' /tmp/demo-host-small.log

# 2. The file server split across RDMA from iotcp-nic.
/bin/iotcp-nic --export-root /srv --channel rdma://10.99.0.1:7471 --netns iotcp --address 10.77.0.2/24 \
  > /tmp/nic.log 2>&1 &
nic=$!
check "iotcp-nic listens on rdma://10.99.0.1:7471" wait_for /tmp/nic.log "serving rdma://" 20
start_host /tmp/host1.log
check "iotcp-fileserver reaches iotcp-nic over RDMA" wait_for /tmp/host1.log "serving http://" 20
before=$(packets)
while read -r sum name; do
  got=$(download "$name")
  check "download $name ($(stat -c %s "/srv/$name") bytes) sha256" [ "$got" = "$sum" ]
done < /expected.sha256
crossed=$(( $(packets) - before ))
check "downloads: RDMA packets crossed the veth ($crossed)" [ "$crossed" -gt 100 ]
check "the NIC named the NVMe disk under the files (libnvme)" grep -q "QEMU NVMe Ctrl (serial iotcp0001, namespace 1)" /tmp/host1.log
sleep 1.5  # the file server keeps a file's open for a second for its next request (--open-file-cache)
kill -USR1 $nic
wait_for /tmp/nic.log "rdma-inline-sends" 5
counters=$(grep "rdma-inline-sends" /tmp/nic.log | tail -1)
echo "vm: figures: iotcp-nic counters after the downloads: $counters" | sed 's/.*notice iotcp-nic: /vm: figures: iotcp-nic: /'
inline=$(echo "$counters" | sed -n 's/.*rdma-inline-sends=\([0-9]*\).*/\1/p')
check "small messages went inline (${inline:-none} of the NIC's SENDs)" [ "${inline:-0}" -gt 0 ]
check "every file closed on the NIC once its download was acknowledged and its cached open stale" grep -q "open-files=0 " /tmp/nic.log

# 3. A second host while one is attached is turned away at once, with the reason.
timeout 30 /bin/iotcp-fileserver --nic rdma://10.99.0.1:7471 --rdma-source 10.99.0.2 --netns iotcp2 \
  --address 10.78.0.2/24 > /tmp/host-busy.log 2>&1
check "a second host is turned away while one is attached" grep -q "another host is attached" /tmp/host-busy.log

# 4. The host killed in the middle of a download: the NIC releases everything and takes the next host.
/bin/ip netns exec iotcp wget -q -O /dev/null --limit-rate=1m "http://10.77.0.2:8080/20m.bin" 2>/dev/null &
client=$!
sleep 1
kill -9 $host
check "the NIC sees the killed host gone and releases its flows" wait_for /tmp/nic.log "peer process exited without closing the channel.*host left" 10
kill $client 2>/dev/null
wait $client 2>/dev/null
start_host /tmp/host2.log
check "a new host attaches after the killed one" wait_for /tmp/host2.log "serving http://" 20
sum=$(grep " 1m.bin" /expected.sha256 | cut -d' ' -f1)
check "the new host serves 1m.bin intact" [ "$(download 1m.bin)" = "$sum" ]

# 5. A clean stop: the NIC hears a close, not a vanished host.
kill -TERM $host
wait $host
check "a stopped host closes the channel" wait_for /tmp/nic.log "peer closed the channel.*host left" 10

# 6. The NIC killed under a host: the host fails its connections and exits with the reason.
start_host /tmp/host3.log
check "a third host attaches" wait_for /tmp/host3.log "serving http://" 20
/bin/ip netns exec iotcp wget -q -O /dev/null --limit-rate=1m "http://10.77.0.2:8080/20m.bin" 2>/dev/null &
client=$!
sleep 1
kill -9 $nic
(sleep 20; kill -9 $host 2>/dev/null) &
wait $host
status=$?
check "the host exits with an error when the NIC vanishes (status $status)" [ "$status" -ne 0 ]
check "the host says the NIC is gone" grep -qE "peer process exited|vanished|peer closed" /tmp/host3.log
kill $client 2>/dev/null
/bin/ip netns del iotcp 2>/dev/null

# 7. The channel between the halves over IPv6 (rdma://[fd99::1]:PORT): the checked exchange, then the file
# server split across it.
before=$(packets)
timeout 60 /bin/iotcp-channel-demo serve --rdma 'rdma://[fd99::1]:7474' > /tmp/demo6-nic.log 2>&1 &
demo=$!
timeout 60 /bin/iotcp-channel-demo exchange --rdma 'rdma://[fd99::1]:7474' --source fd99::2 --count 50000 > /tmp/demo6-host.log 2>&1
wait $demo
check "channel demo over IPv6: 50000 SENDs checked and answered" grep -q "received and checked 50000 ECHO" /tmp/demo6-host.log
if ! grep -q "received and checked 50000 ECHO" /tmp/demo6-host.log; then
  for device in rxe0 rxe1; do
    for gid in /sys/class/infiniband/$device/ports/1/gids/*; do
      value=$(cat "$gid" 2>/dev/null); [ "$value" != "0000:0000:0000:0000:0000:0000:0000:0000" ] && echo "vm: diag: $device gid $(basename "$gid") $value $(cat /sys/class/infiniband/$device/ports/1/gid_attrs/types/$(basename "$gid") 2>/dev/null)"
    done
  done
  /bin/ip -6 addr show | sed 's/^/vm: diag: /'
  /bin/ip -6 route get fd99::1 from fd99::2 | sed 's/^/vm: diag: /'
  /bin/ip -6 rule | sed 's/^/vm: diag: /'
  cat /tmp/demo6-nic.log | sed 's/^/vm: diag: nic: /'
fi
/bin/iotcp-nic --export-root /srv --channel 'rdma://[fd99::1]:7475' --netns iotcp6 --address 10.76.0.2/24,fd76::2/64 > /tmp/nic6.log 2>&1 &
nic6=$!
check "iotcp-nic listens on rdma://[fd99::1]:7475" wait_for /tmp/nic6.log "serving rdma://" 20
/bin/iotcp-fileserver --nic 'rdma://[fd99::1]:7475' --rdma-source fd99::2 --netns iotcp6 --address 10.76.0.2/24,fd76::2/64 > /tmp/host6.log 2>&1 &
host6=$!
check "iotcp-fileserver reaches iotcp-nic over RDMA over IPv6" wait_for /tmp/host6.log "serving http://" 20
sum=$(grep " 1m.bin" /expected.sha256 | cut -d' ' -f1)
got=$(timeout 60 /bin/ip netns exec iotcp6 wget -q -O - "http://10.76.0.2:8080/1m.bin" | sha256sum | cut -d' ' -f1)
check "over the IPv6 channel: 1m.bin intact" [ "$got" = "$sum" ]
got=$(timeout 60 /bin/ip netns exec iotcp6 wget -q -O - "http://[fd76::2]:8080/1m.bin" | sha256sum | cut -d' ' -f1)
check "IPv6 on the wire and on the channel: 1m.bin intact" [ "$got" = "$sum" ]
crossed=$(( $(packets) - before ))
check "IPv6: RDMA packets crossed the veth ($crossed)" [ "$crossed" -gt 100 ]
kill -TERM $host6
wait $host6
kill -TERM $nic6 2>/dev/null
wait $nic6 2>/dev/null
/bin/ip netns del iotcp6 2>/dev/null

for log in /tmp/demo-nic.log /tmp/demo-host.log /tmp/nic.log /tmp/host1.log /tmp/host2.log /tmp/host-busy.log /tmp/host3.log \
           /tmp/demo6-host.log /tmp/nic6.log /tmp/host6.log; do
  [ "$failed" -eq 0 ] || sed "s|^|vm: $log: |" "$log" | tail -15
done
finish
