#!/usr/bin/env bash
# Cost of the access log (and of the always-on metrics, compared with the access log off) on
# connection rate and throughput: same machine, same run, rounds alternating between modes.
# dermaga is pinned to CPU 0, the load and the backend to CPU 1 (taskset, from util-linux).
# Usage: loadtest/access-log-cost.sh [ROUNDS] [SECONDS]   (defaults 3 and 5)
# With BASELINE=/path/to/an/older/dermaga (e.g. a build from before metrics existed), that
# binary runs as a third contender ("baseline"), to show what metrics cost.
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
rounds=${1:-3}
secs=${2:-5}
command -v taskset >/dev/null || { echo "taskset is missing: apt-get install util-linux" >&2; exit 1; }
cargo build --release -q -p dermaga -p loadtest
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

taskset -c 1 $bin/loadtest backend --listen 127.0.0.2:19000 &
single_backend_config "$work/config.yaml" 19000

results="$work/results.jsonl"
modes="json off"
[ -n "${BASELINE:-}" ] && modes="$modes baseline"
for round in $(seq 1 "$rounds"); do
  for mode in $modes; do
    if [ "$mode" = baseline ]; then
      taskset -c 0 "$BASELINE" --config "$work/config.yaml" --listen-address 127.1.1.1 \
        --admin-address 127.1.1.1:10254 --log-level warn > "$work/access-$mode.log" &
    else
      taskset -c 0 $bin/dermaga --config "$work/config.yaml" --listen-address 127.1.1.1 \
        --admin-address 127.1.1.1:0 --access-log "$mode" --log-level warn > "$work/access-$mode.log" &
    fi
    pid=$!
    wait_for_port 127.1.1.1 10000
    conn=$(taskset -c 1 $bin/loadtest conn --target 127.1.1.1:10000 --concurrency 50 --duration "${secs}s")
    bulk=$(taskset -c 1 $bin/loadtest bulk --target 127.1.1.1:10000 --streams 1 --duration "${secs}s")
    kill -TERM $pid; wait $pid || true
    echo "{\"round\": $round, \"mode\": \"$mode\", \"conn\": $conn, \"bulk\": $bulk, \"log_lines\": $(wc -l < "$work/access-$mode.log")}" >> "$results"
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| access log | conn/s median (min–max) | failed | 1-stream Gbit/s median (min–max) |")
print("|---|---|---|---|")
med = {}
modes = [m for m in ("json", "off", "baseline") if any(x["mode"] == m for x in rows)]
for mode in modes:
    r = [x for x in rows if x["mode"] == mode]
    c = [x["conn"]["conn_per_sec"] for x in r]
    b = [x["bulk"]["gbit_per_sec"] for x in r]
    f = sum(x["conn"]["failed"] for x in r)
    med[mode] = (statistics.median(c), statistics.median(b))
    print(f"| {mode} | {med[mode][0]:.0f} ({min(c):.0f}–{max(c):.0f}) | {f} | {med[mode][1]:.2f} ({min(b):.2f}–{max(b):.2f}) |")
print(f"\njson/off: conn/s {med['json'][0]/med['off'][0]:.3f}, throughput {med['json'][1]/med['off'][1]:.3f}; rounds: {len(rows)//len(modes)}")
if "baseline" in med:
    print(f"off/baseline: conn/s {med['off'][0]/med['baseline'][0]:.3f}, throughput {med['off'][1]/med['baseline'][1]:.3f}")
PY
