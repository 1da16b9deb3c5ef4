#!/usr/bin/env bash
# Builds the libFuzzer targets with the address sanitizer and runs each for a bounded time:
#   Wire     wire formats (emit/parse oracle), seeded with every frame of the real Linux capture
#   Command  the command decoder (re-encoding is stable)
#   Engine   the host's TCP engine past the parsers: scripts of segments, time and application calls
#   NIC      the NIC's command executor and I/O engine: an untrusted host's command streams
# IOTCPCommon is built once as a module of its own; each target compiles its sources (IOTCPHost/TCP's,
# IOTCPNICCore's) with it: none of them depends on anything else, so no package build is needed.
# Corpora live in Fuzz/corpus/TARGET (a copy is fuzzed, so runs never change the repository).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
# Prints "fuzz: N targets passed"; artifacts of a failure land in fuzz-artifacts/ and the run exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=.build-fuzz
mkdir -p "$build/modules" fuzz-artifacts
flags=(-O -parse-as-library -sanitize=fuzzer,address)
common=$(find Sources/IOTCPCommon -name '*.swift' | sort)
# A target is rebuilt when any of its sources (or the fuzz script) is newer than its binary.
stale() { [ ! -e "$1" ] || [ -n "$(find "${@:2}" -newer "$1" 2>/dev/null | head -1)" ]; }
compile() {  # compile LOG COMMAND...: the linker's "cannot export local symbol __asan_*" notes are harmless
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; exit 1; fi
}
if stale "$build/libIOTCPCommon.a" $common; then
  echo "fuzz: building IOTCPCommon"
  compile "$build/build-common.log" swiftc "${flags[@]}" -module-name IOTCPCommon -emit-module \
    -emit-module-path "$build/modules/IOTCPCommon.swiftmodule" -emit-library -static -o "$build/libIOTCPCommon.a" $common
fi

# Seeds: every frame of the real capture for the wire target; the committed corpora for the others.
mkdir -p "$build/corpus-Wire"
python3 - "$build/corpus-Wire" Tests/IOTCPCommonTests/Fixtures/linux-tcp.pcap <<'PY'
import struct, sys
out, path = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
endian = '<' if data[:4] in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
offset, n = 24, 0
while offset + 16 <= len(data):
    captured = struct.unpack(endian + 'I', data[offset + 8:offset + 12])[0]
    open(f"{out}/frame-{n:04d}", 'wb').write(data[offset + 16:offset + 16 + captured])
    offset += 16 + captured
    n += 1
PY

status=0
passed=0
for target in Wire Command Engine NIC; do
  binary="$build/fuzz-$target"
  case $target in
    Wire|Command) sources="$common" imports=() library=() ;;
    Engine) sources="$(find Sources/IOTCPHost/TCP -name '*.swift' | sort) Fuzz/FuzzInput.swift" imports=(-I "$build/modules") library=("$build/libIOTCPCommon.a") ;;
    NIC) sources="$(find Sources/IOTCPNICCore -name '*.swift' | sort) Fuzz/FuzzInput.swift" imports=(-I "$build/modules") library=("$build/libIOTCPCommon.a") ;;
  esac
  if stale "$binary" $sources "Fuzz/${target}Fuzz.swift" "$build/libIOTCPCommon.a"; then
    echo "fuzz: building $target target"
    compile "$build/build-$target.log" swiftc "${flags[@]}" -module-name "Fuzz$target" "${imports[@]}" \
      $sources "Fuzz/${target}Fuzz.swift" "${library[@]}" -o "$binary"
  fi
  corpus="$build/corpus-$target"
  mkdir -p "$corpus"
  [ -d "Fuzz/corpus/$target" ] && cp -n "Fuzz/corpus/$target"/* "$corpus"/ 2>/dev/null || true
  echo "fuzz: running $target for ${seconds}s"
  if ! "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix=fuzz-artifacts/ "$corpus" 2>"$build/fuzz-$target.log"; then
    echo "fuzz: $target FAILED; see $build/fuzz-$target.log and fuzz-artifacts/" >&2
    tail -40 "$build/fuzz-$target.log" >&2
    status=1
  else
    executed=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$build/fuzz-$target.log" | tail -1)
    if [ "${executed:-0}" -lt 100 ]; then
      echo "fuzz: $target ran only ${executed:-0} inputs" >&2
      status=1
    else
      grep -E "cov:" "$build/fuzz-$target.log" | tail -1 | sed "s/^/fuzz: $target: /"
      passed=$((passed + 1))
    fi
  fi
done
echo "fuzz: $passed targets passed"
exit $status
