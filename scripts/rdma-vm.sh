#!/usr/bin/env bash
# The RDMA testbed: boots a small VM whose kernel has Soft-RoCE (rdma_rxe) and an emulated NVMe disk, and
# runs iotcp split across RDMA inside it (scripts/vm-init.sh is the VM's /init):
#   - Soft-RoCE on both ends of a veth pair, with policy routes so RDMA packets really cross the veth;
#   - iotcp-nic serving an ext4 file system on the NVMe disk, naming the disk through libnvme, listening at
#     rdma://10.99.0.1:7471; iotcp-fileserver as a separate process reaching it from 10.99.0.2;
#   - a client in the NIC's network namespace downloading files of several sizes, each checked by sha256;
#   - the channel's own figures (iotcp-channel-demo over RDMA: commands per message, messages/s);
#   - a host killed mid-download, a host turned away while another is attached, a clean close, the NIC
#     killed under a host.
# Watchdogs: qemu runs under `timeout`, every step in the VM under its own. Exits non-zero on any failure.
#
# Usage: scripts/rdma-vm.sh [BINARIES]     BINARIES: where iotcp-nic, iotcp-fileserver and
#                                          iotcp-channel-demo are (default .build/debug)
# Needs root (apt, depmod). Runs qemu under software emulation (IOTCP_VM_ACCEL=kvm to use KVM).
set -euo pipefail
cd "$(dirname "$0")/.."
binaries=${1:-.build/debug}
work=.build/vm
mkdir -p "$work"

packages=(qemu-system-x86 busybox-static rdma-core ibverbs-utils rdmacm-utils e2fsprogs cpio kmod iproute2 binutils)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "rdma-vm: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for binary in iotcp-nic iotcp-fileserver iotcp-channel-demo; do
  [ -x "$binaries/$binary" ] || { echo "rdma-vm: $binaries/$binary is missing (swift build first)" >&2; exit 1; }
done

# The kernel: Debian's, unpacked beside the build (never installed: it is only a file for qemu to boot).
version=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -1)
if [ -z "$version" ]; then
  apt-get update -qq
  version=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -1)
fi
kernel=$work/kernel-$version
if [ ! -f "$kernel/boot/vmlinuz-$version" ]; then
  echo "rdma-vm: fetching linux-image-$version"
  rm -rf "$kernel" && mkdir -p "$kernel"
  (cd "$kernel" && { apt-get download "linux-image-$version" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "linux-image-$version" >/dev/null; }; })
  dpkg -x "$kernel"/linux-image-*.deb "$kernel"
  rm -f "$kernel"/linux-image-*.deb
  depmod -b "$kernel" "$version"
fi
modules=$kernel/lib/modules/$version

# The modules the VM loads, each after what it depends on (modules.dep names a module's dependencies).
declare -A loaded=()
order=()
add_module() {
  local name=$1 line path dependency
  line=$(grep -E "(^|/)$name\.ko:" "$modules/modules.dep" || true)
  if [ -z "$line" ]; then
    grep -qE "(^|/)$name\.ko$" "$modules/modules.builtin" || { echo "rdma-vm: no module $name in $version" >&2; exit 1; }
    return
  fi
  path=${line%%:*}
  [ -n "${loaded[$path]:-}" ] && return
  for dependency in ${line#*:}; do
    dependency=$(basename "$dependency" .ko)
    add_module "$dependency"
  done
  loaded[$path]=1
  order+=("$path")
}
for name in crc32_generic crc32c_generic libcrc32c veth tun rdma_rxe ib_uverbs rdma_ucm nvme ext4; do add_module "$name"; done

# The initramfs: busybox, iproute2's ip and rdma, the rxe verbs provider, iotcp's binaries (stripped of
# debug information) and every library they load, at the paths they are loaded from.
root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,srv,etc/libibverbs.d,lib/modules,usr/lib/x86_64-linux-gnu/libibverbs}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  case $applet in ip|busybox) continue ;; esac
  ln -sf busybox "$root/bin/$applet"
done
copy_with_libraries() {  # FILE DESTINATION
  local file=$1 destination=$2 library
  mkdir -p "$(dirname "$root$destination")"
  cp -L "$file" "$root$destination"
  for library in $(ldd "$file" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}'); do
    [ -e "$root$library" ] && continue
    mkdir -p "$(dirname "$root$library")"
    cp -L "$library" "$root$library"
  done
}
copy_with_libraries "$(command -v ip)" /bin/ip
copy_with_libraries "$(command -v rdma)" /bin/rdma
copy_with_libraries /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so
cp /etc/libibverbs.d/rxe.driver "$root/etc/libibverbs.d/"
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/" 2>/dev/null || true  # ldd does not list it
for binary in iotcp-nic iotcp-fileserver iotcp-channel-demo; do
  copy_with_libraries "$binaries/$binary" "/bin/$binary"
  strip --strip-debug "$root/bin/$binary"
done
: > "$root/modules.order"
for path in "${order[@]}"; do
  mkdir -p "$root/lib/modules/$(dirname "$path")"
  cp "$modules/$path" "$root/lib/modules/$path"
  echo "$path" >> "$root/modules.order"
done
cp scripts/vm-init.sh "$root/init"
chmod +x "$root/init"

# The disk: files of several sizes on ext4, their sha256 beside them in the initramfs.
files=$work/files
rm -rf "$files" && mkdir -p "$files/sub"
head -c 1 /dev/urandom > "$files/one-byte.bin"
head -c 4096 /dev/urandom > "$files/4k.bin"
head -c 100001 /dev/urandom > "$files/sub/100k.bin"
head -c 1048576 /dev/urandom > "$files/1m.bin"
head -c 20971520 /dev/urandom > "$files/20m.bin"
(cd "$files" && find . -type f | sed 's|^\./||' | sort | xargs sha256sum) > "$root/expected.sha256"
rm -f "$work/disk.img"
mkfs.ext4 -q -F -L iotcp -d "$files" "$work/disk.img" 64M

(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd.gz"
echo "rdma-vm: kernel $version, initramfs $(du -h "$work/initrd.gz" | cut -f1), ${#order[@]} modules"

# Software emulation: on these machines /dev/kvm exists but a KVM guest hung in firmware (nested
# virtualisation); IOTCP_VM_ACCEL=kvm tries it where it works.
acceleration=(-accel "${IOTCP_VM_ACCEL:-tcg}")
limit=600
log=$work/console.log
set +e
timeout --foreground -k 10 "$limit" qemu-system-x86_64 "${acceleration[@]}" -m 2048 -smp 2 -nographic -no-reboot \
  -kernel "$kernel/boot/vmlinuz-$version" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 loglevel=3" -nic none \
  -drive file="$work/disk.img",if=none,id=nvm,format=raw -device nvme,serial=iotcp0001,drive=nvm \
  < /dev/null 2>&1 | tr -d '\r' | tee "$log" | grep --line-buffered -E "^vm:"
qemu_status=${PIPESTATUS[0]}
set -e
# qemu powers off cleanly (status 0) when /init finishes; 124/137 is the watchdog, anything else a crash.
if [ "$qemu_status" -ne 0 ]; then
  echo "rdma-vm: qemu exited with status $qemu_status$([ "$qemu_status" -ge 124 ] && echo " (the ${limit} s watchdog)") (console: $log)" >&2
  tail -20 "$log" >&2
  exit 1
fi
if ! grep -qE "^vm: [0-9]+ passed, 0 failed" "$log"; then
  echo "rdma-vm: FAILED (console: $log)" >&2
  grep -E "^vm: FAIL" "$log" >&2 || tail -40 "$log" >&2
  exit 1
fi
