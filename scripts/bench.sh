#!/usr/bin/env bash
# Benchmarks of the foundation (checksum, command codec, channels in-process and across processes).
# Prints a table and writes Docs/benchmarks/foundation.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
swift build -c release >/dev/null 2>&1 || swift build -c release
mkdir -p Docs/benchmarks
.build/release/iotcp-bench --json Docs/benchmarks/foundation.json "$@"
