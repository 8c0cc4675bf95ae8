#!/usr/bin/env bash
# dermaga side by side with nginx (stream) and HAProxy (mode tcp) and the direct path, driven
# by this repo's load generator and by clients nobody here wrote (iperf3, redis-benchmark,
# dnsperf): installs what is missing from Debian's packages (as root; otherwise it says what
# to install), builds the release binaries, raises the open-files limit to the hard limit
# (the idle workload holds 10,000 connections, two descriptors each in a proxy), then runs
# `loadtest compare`. Arguments go to `loadtest compare` (see --help):
#   loadtest/compare.sh                    # 3 rounds of 5 s on loopback, report in target/compare/
#   loadtest/compare.sh --write-docs       # ... and into docs/benchmarks.md + docs/images/
#   loadtest/compare.sh --topology veth --write-docs   # client, gateway, backend in netns + veth
#   loadtest/compare.sh --rounds 1 --duration 2s --idle-connections 2000   # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
need=(taskset:util-linux nginx:nginx-light haproxy:haproxy iperf3:iperf3
      redis-server:redis-server redis-benchmark:redis-tools dnsperf:dnsperf
      dnsmasq:dnsmasq-base ip:iproute2)
missing=()
for n in "${need[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "${n%%:*}" >/dev/null || missing+=("${n#*:}")
done
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "compare.sh: installing the benchmark's programs: ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    # The packages' own services are not wanted running beside the benchmark.
    for s in nginx haproxy redis-server; do
      command -v systemctl >/dev/null && systemctl stop "$s" 2>/dev/null || true
      pkill -x "$s" 2>/dev/null || true
    done
  else
    echo "compare.sh: missing packages: ${missing[*]}" >&2
    echo "  install with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    echo "  (or leave contenders and workloads out: see target/release/loadtest compare --help)" >&2
  fi
fi
cargo build --release -q -p dermaga -p loadtest
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # loadtest raises its own soft limit too
export LOADTEST_COMMAND="loadtest/compare.sh${*:+ $*}"
exec target/release/loadtest compare "$@"
