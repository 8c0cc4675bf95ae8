#!/usr/bin/env bash
# dermaga side by side with nginx (stream) and HAProxy (mode tcp) and the direct path: builds
# the release binaries, raises the open-files limit to the hard limit (the idle workload holds
# 10,000 connections, two descriptors each in a proxy), then runs `loadtest compare`, which
# checks for nginx-light, libnginx-mod-stream, haproxy and taskset and says how to install
# what is missing (it installs nothing). Arguments go to `loadtest compare` (see --help):
#   loadtest/compare.sh                    # 3 rounds of 5 s, report in target/compare/
#   loadtest/compare.sh --write-docs       # ... and into docs/benchmarks.md + docs/images/
#   loadtest/compare.sh --rounds 1 --duration 2s --idle-connections 2000   # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p dermaga -p loadtest
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # loadtest raises its own soft limit too
export LOADTEST_COMMAND="loadtest/compare.sh${*:+ $*}"
exec target/release/loadtest compare "$@"
