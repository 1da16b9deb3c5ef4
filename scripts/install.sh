#!/usr/bin/env bash
# Installs libiotcp for C programs: the header into PREFIX/include, the shared and the static library into
# PREFIX/lib, and two pkg-config files, so that `cc prog.c $(pkg-config --cflags --libs iotcp)` builds and
# the program runs (the Swift runtime's directory is in the library's and the program's run path), and
# `cc prog.c $(pkg-config --cflags --libs iotcp-static)` links libiotcp and the Swift runtime into the
# program itself (it then needs no Swift on the machine it runs on).
#
# Usage: [PREFIX=/usr/local] [CONFIGURATION=release] scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
configuration=${CONFIGURATION:-release}
source scripts/install-deps.sh >/dev/null
echo "install: building libiotcp ($configuration; the first build takes minutes)" >&2
for product in iotcp iotcp-static; do
  swift build -c "$configuration" --product "$product" 2>&1 | grep -E "error|warning:" || true
  swift build -c "$configuration" --product "$product" >/dev/null
done
binaries=$(swift build -c "$configuration" --show-bin-path)
runtime=$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux
runtime=$(readlink -f "$runtime")
[ -f "$runtime/libswiftCore.so" ] || { echo "install: no Swift runtime at $runtime" >&2; exit 1; }
install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 Sources/CIOTCPABI/include/iotcp.h "$prefix/include/iotcp.h"
install -m 755 "$binaries/libiotcp.so" "$prefix/lib/libiotcp.so"
install -m 644 "$binaries/libiotcp-static.a" "$prefix/lib/libiotcp.a"
static_runtime=$(readlink -f "$runtime/../../swift_static/linux")
[ -f "$static_runtime/libswiftCore.a" ] || { echo "install: no static Swift runtime at $static_runtime" >&2; exit 1; }
cat > "$prefix/lib/pkgconfig/iotcp.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib
swiftruntime=$runtime

Name: iotcp
Description: IO-TCP's host half for C servers: sockets, offloaded files, an epoll-style event queue
Version: 0.1.0
Cflags: -I\${includedir}
Libs: -L\${libdir} -liotcp -Wl,-rpath,\${libdir} -Wl,-rpath,\${swiftruntime}
PC
# Static: the archive, the Swift runtime's registration object (it hands the runtime the archive's metadata
# sections, which swiftc adds to every Swift program and cc does not), the static Swift runtime, and the C
# libraries iotcp binds.
cat > "$prefix/lib/pkgconfig/iotcp-static.pc" <<PC
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/lib
swiftstatic=$static_runtime

Name: iotcp-static
Description: libiotcp linked into the program, with the Swift runtime
Version: 0.1.0
Cflags: -I\${includedir}
Libs: \${libdir}/libiotcp.a \${swiftstatic}/x86_64/swiftrt.o -L\${swiftstatic} -lswift_Concurrency -lswiftSynchronization -lswiftGlibc -lswiftDispatch -lswiftSwiftOnoneSupport -lswiftCore -ldispatch -lBlocksRuntime -libverbs -lrdmacm -lnvme -luring -lssl -lcrypto -lstdc++ -lm -ldl -lpthread
PC
echo "install: $prefix/include/iotcp.h, $prefix/lib/libiotcp.{so,a}, $prefix/lib/pkgconfig/iotcp{,-static}.pc"
