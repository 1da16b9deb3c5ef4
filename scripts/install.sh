#!/usr/bin/env bash
# Installs libiotcp for C programs: the header into PREFIX/include, the shared library into PREFIX/lib, and
# a pkg-config file, so that `cc prog.c $(pkg-config --cflags --libs iotcp)` builds and the program runs
# (the Swift runtime's directory is in the library's and the program's run path).
#
# Usage: [PREFIX=/usr/local] [CONFIGURATION=release] scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
configuration=${CONFIGURATION:-release}
source scripts/install-deps.sh >/dev/null
swift build -c "$configuration" --product iotcp 2>&1 | grep -E "error|warning:" || true
swift build -c "$configuration" --product iotcp >/dev/null
binaries=$(swift build -c "$configuration" --show-bin-path)
runtime=$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux
runtime=$(readlink -f "$runtime")
[ -f "$runtime/libswiftCore.so" ] || { echo "install: no Swift runtime at $runtime" >&2; exit 1; }
install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 Sources/CIOTCPABI/include/iotcp.h "$prefix/include/iotcp.h"
install -m 755 "$binaries/libiotcp.so" "$prefix/lib/libiotcp.so"
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
echo "install: $prefix/include/iotcp.h, $prefix/lib/libiotcp.so, $prefix/lib/pkgconfig/iotcp.pc"
