#!/usr/bin/env bash
# Builds the libFuzzer targets (wire formats, command decoder) with the address sanitizer and runs each
# for a bounded time. IOTCPCommon has no dependencies, so its sources compile straight into each target.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
# Artifacts of a failure land in fuzz-artifacts/; the run then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=.build-fuzz
mkdir -p "$build" fuzz-artifacts
sources=$(find Sources/IOTCPCommon -name '*.swift' | sort)

# Seeds: every frame of the real capture for the wire target; the command target starts from nothing.
mkdir -p "$build/corpus-wire" "$build/corpus-commands"
python3 - "$build/corpus-wire" Tests/IOTCPCommonTests/Fixtures/linux-tcp.pcap <<'PY'
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
for target in Wire Command; do
  binary="$build/fuzz-$target"
  if [ ! -x "$binary" ] || [ -n "$(find $sources Fuzz/${target}Fuzz.swift -newer "$binary" 2>/dev/null | head -1)" ]; then
    echo "fuzz: building $target target"
    # The linker's "cannot export local symbol __asan_*" notes are harmless; show the log only on failure.
    if ! swiftc -O -parse-as-library -sanitize=fuzzer,address -module-name "Fuzz$target" \
         $sources "Fuzz/${target}Fuzz.swift" -o "$binary" >"$build/build-$target.log" 2>&1; then
      cat "$build/build-$target.log" >&2
      exit 1
    fi
  fi
  corpus="$build/corpus-$( [ $target = Wire ] && echo wire || echo commands )"
  echo "fuzz: running $target for ${seconds}s"
  if ! "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix=fuzz-artifacts/ "$corpus" 2>"$build/fuzz-$target.log"; then
    echo "fuzz: $target FAILED; see $build/fuzz-$target.log and fuzz-artifacts/" >&2
    tail -40 "$build/fuzz-$target.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$build/fuzz-$target.log" | tail -2 | sed "s/^/fuzz: $target: /"
  fi
done
exit $status
