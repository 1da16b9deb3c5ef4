#!/usr/bin/env bash
# Builds lighttpd on iotcp: Debian bookworm's lighttpd 1.4.69 source, fetched with Debian's own tools (a
# deb-src entry for the archive this machine already uses), with lighttpd-1.4.69-iotcp.patch applied,
# linked against iotcp_glue.c (built as libiotcp-glue.so) and libiotcp, installed beside it. Idempotent:
# a finished build is reused.
#
# Usage (root, for the apt steps): Examples/lighttpd/build.sh [OUT]   (default OUT: .build/lighttpd)
#   CONFIGURATION=release|debug  which libiotcp to build (release)
# Prints the path of the lighttpd binary last. Run it with Examples/lighttpd/run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$repo/.build/lighttpd}" && cd "${1:-$repo/.build/lighttpd}" && pwd)
configuration=${CONFIGURATION:-release}
version=1.4.69
debian_version=1.4.69-1
stamp="$out/built-$(cat "$here/lighttpd-$version-iotcp.patch" "$here/iotcp_glue.c" "$here/iotcp_glue.h" "$here/build.sh" | sha256sum | cut -c1-16)"

# libiotcp first: lighttpd links against it (a changed library is picked up even when lighttpd is built).
PREFIX="$out/prefix" CONFIGURATION="$configuration" "$repo/scripts/install.sh" >&2
export PKG_CONFIG_PATH="$out/prefix/lib/pkgconfig"
if [ -f "$stamp" ] && [ -x "$out/prefix/sbin/lighttpd" ]; then
  echo "$out/prefix/sbin/lighttpd"
  exit 0
fi

# The source, from Debian: a deb-src line for the same archive and suite as the machine's deb lines.
if ! ls "$out"/source/lighttpd_${debian_version}.dsc >/dev/null 2>&1; then
  if ! apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -q '^Sources$'; then
    list=/etc/apt/sources.list.d/iotcp-deb-src.sources
    uri=$(sed -nE 's/^URIs: *(.*debian)\/?$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    uri=${uri:-$(sed -nE 's/^deb +(\[[^]]*\] +)?([^ ]+) +bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)}
    [ -n "$uri" ] || { echo "lighttpd: no Debian archive found in /etc/apt to take the source from" >&2; exit 1; }
    printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$list"
    echo "lighttpd: added $list (deb-src for $uri bookworm)" >&2
    apt-get update -qq >&2
  fi
  mkdir -p "$out/source"
  (cd "$out/source" && apt-get source -qq --download-only "lighttpd=$debian_version" >&2)
fi

# A fresh tree every build: the patch applies to Debian's source as it came.
rm -rf "$out/src"
dpkg-source -x "$out/source/lighttpd_${debian_version}.dsc" "$out/src" >&2
cp "$here/iotcp_glue.h" "$out/src/src/"
(cd "$out/src" && patch -p1 --quiet --no-backup-if-mismatch < "$here/lighttpd-$version-iotcp.patch")

# The glue as a shared library beside libiotcp: lighttpd and the modules that call it (mod_proxy's
# getsockname) share its one table of sockets, where a static copy in each would not.
install -d "$out/prefix/lib"
cc -std=gnu11 -O2 -g -fPIC -shared -Wall -Wextra -Werror -o "$out/prefix/lib/libiotcp-glue.so" "$here/iotcp_glue.c" \
  $(pkg-config --cflags --libs iotcp)

cd "$out/src"
./configure -q --prefix="$out/prefix" --without-pcre2 --without-zlib --without-bzip2 \
  CFLAGS="-O2 -g" LIBS="-L$out/prefix/lib -liotcp-glue -Wl,-rpath,$out/prefix/lib $(pkg-config --libs iotcp)" >&2
make -s -j"$(nproc)" >&2
make -s install >&2
rm -f "$out"/built-*
touch "$stamp"
echo "$out/prefix/sbin/lighttpd"
