#!/usr/bin/env bash
# Issue #5's comparison: the S2 and S3 scenarios of docs/scenarios.md through dermaga, nginx
# (stream) and HAProxy (mode tcp), each with its default failover settings, failures counted
# for each. Builds the release binaries, then runs `loadtest failover-compare`, which uses the
# same contender configurations, pinning and package checks as `loadtest compare` (it installs
# nothing; it prints the apt-get command for what is missing). About 5 minutes.
#   loadtest/failover-compare.sh                 # 3 rounds; report in target/failover/
#   loadtest/failover-compare.sh --write-docs    # ... and into docs/resilience.md
#   loadtest/failover-compare.sh --rounds 1 --connections 1000   # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p dermaga -p loadtest
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export LOADTEST_COMMAND="loadtest/failover-compare.sh${*:+ $*}"
exec target/release/loadtest failover-compare "$@"
