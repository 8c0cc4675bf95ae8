#!/usr/bin/env bash
# A/B two dermaga builds on the TCP workloads a data-path change can move: RSS and descriptors
# per idle connection, 1- and 4-stream throughput, 64 B request/response (req/s and proxy CPU
# per request), new connections/s. Rounds alternate A and B; dermaga is pinned to CPU 0, load
# and backend to CPU 1. Prints medians and min–max, and B/A ratios.
# Usage: loadtest/ab.sh A_BINARY B_BINARY [ROUNDS] [SECONDS] [IDLE_CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
a=$1; b=$2; rounds=${3:-3}; secs=${4:-5}; idle=${5:-5000}
command -v taskset >/dev/null || { echo "taskset is missing: apt-get install util-linux" >&2; exit 1; }
cargo build --release -q -p loadtest
lt=target/release/loadtest
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

taskset -c 1 $lt backend --listen 127.0.0.2:19001 &
single_backend_config "$work/config.yaml" 19001

results="$work/results.jsonl"
for round in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a; [ $which = B ] && bin=$b
    taskset -c 0 "$bin" --config "$work/config.yaml" --listen-address 127.1.1.2 \
      --admin-address 127.1.1.2:0 --access-log off --log-level warn --shutdown-delay 0s &
    pid=$!
    wait_for_port 127.1.1.2 10000
    t=127.1.1.2:10000
    idle_r=$(taskset -c 1 $lt idle --target $t --connections "$idle" --hold 1s --proxy-pid $pid)
    bulk1=$(taskset -c 1 $lt bulk --target $t --streams 1 --duration "${secs}s")
    bulk4=$(taskset -c 1 $lt bulk --target $t --streams 4 --duration "${secs}s")
    rr=$(taskset -c 1 $lt rr --target $t --connections 50 --duration "${secs}s" --proxy-pid $pid)
    conn=$(taskset -c 1 $lt conn --target $t --concurrency 50 --duration "${secs}s" --proxy-pid $pid)
    kill -TERM $pid; wait $pid || true
    echo "{\"round\": $round, \"which\": \"$which\", \"idle\": $idle_r, \"bulk1\": $bulk1, \"bulk4\": $bulk4, \"rr\": $rr, \"conn\": $conn}" >> "$results"
  done
done

python3 - "$results" "$a" "$b" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
metrics = [
    ("RSS per idle connection (bytes)", lambda r: r["idle"]["proxy_rss_bytes_per_conn"]),
    ("descriptors per idle connection", lambda r: r["idle"]["proxy_fds_per_conn"]),
    ("bulk 1 stream (Gbit/s)", lambda r: r["bulk1"]["gbit_per_sec"]),
    ("bulk 4 streams (Gbit/s)", lambda r: r["bulk4"]["gbit_per_sec"]),
    ("rr 64 B, 50 conns (req/s)", lambda r: r["rr"]["req_per_sec"]),
    ("proxy CPU per request (µs)", lambda r: r["rr"]["proxy_cpu_us_per_request"]),
    ("new connections (conn/s)", lambda r: r["conn"]["conn_per_sec"]),
    ("proxy CPU per connection (µs)", lambda r: r["conn"].get("proxy_cpu_us_per_conn")),
]
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| workload | A median (min–max) | B median (min–max) | B/A |")
print("|---|---|---|---|")
for name, f in metrics:
    vals = {}
    for w in ("A", "B"):
        v = [f(r) for r in rows if r["which"] == w]
        v = [x for x in v if x is not None]
        vals[w] = v
    if not vals["A"] or not vals["B"]:
        continue
    ma, mb = statistics.median(vals["A"]), statistics.median(vals["B"])
    fmt = lambda x: f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"
    print(f"| {name} | {fmt(ma)} ({fmt(min(vals['A']))}–{fmt(max(vals['A']))}) | {fmt(mb)} ({fmt(min(vals['B']))}–{fmt(max(vals['B']))}) | {mb/ma if ma else float('nan'):.3f} |")
print(f"\nrounds: {len(rows)//2}; failures: idle {sum(r['idle']['failed'] for r in rows)}, conn {sum(r['conn']['failed'] for r in rows)}, rr errors {sum(r['rr']['errors'] for r in rows)}")
PY
