#!/usr/bin/env bash
# The main job, for now: builds iotcp in release mode and runs the host and NIC halves as two processes
# exchanging 1,000,000 commands over the shared-memory channel, every field of every command checked
# on arrival, then prints the channel's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "== building (release)"
swift build -c release --product iotcp-channel-demo >/dev/null 2>&1 || swift build -c release --product iotcp-channel-demo
echo "== host and NIC processes over shared memory"
.build/release/iotcp-channel-demo run --count "${COUNT:-1000000}"
cat <<'MORE'

More:
  .build/release/iotcp-channel-demo run --count 10000000 --busy-poll   spin instead of sleeping on eventfds
  .build/release/iotcp-channel-demo serve --path /tmp/nic.sock         a NIC process for your own host side
  scripts/bench.sh                                                     checksum, codec and channel benchmarks
MORE
