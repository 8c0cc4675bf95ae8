#!/usr/bin/env bash
# A/B two dermaga builds on DNS over UDP with a real client: dnsperf sends queries for
# example.test through dermaga to dnsmasq. Rounds alternate A and B; dermaga is pinned to CPU 0,
# dnsmasq and dnsperf to CPU 1. Prints dnsperf's queries/s and average latency, dermaga's CPU
# per query (user + system time from /proc over the run), lost queries; medians, min–max, B/A.
# Needs: dnsperf, dnsmasq (dnsmasq-base), taskset (util-linux).
# Usage: loadtest/udp-ab.sh A_BINARY B_BINARY [ROUNDS] [SECONDS] [CLIENTS]  (defaults 5, 5, 50)
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
a=$1; b=$2; rounds=${3:-5}; secs=${4:-5}; clients=${5:-50}
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install with: apt-get install ${missing[*]}" >&2; exit 1
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.2; rm -rf "$work"' EXIT
start_dnsmasq "$work/dnsmasq.pid"
dns_backend_config "$work/dermaga.yaml"
echo "example.test A" > "$work/queries"
# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

results="$work/results.jsonl"
sleep 0.5
for round in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a; [ $which = B ] && bin=$b
    taskset -c 0 "$bin" --config "$work/dermaga.yaml" --tcp-services-configmap dermaga/none \
      --udp-services-configmap dermaga/udp-services --listen-address 127.1.2.1 \
      --admin-address 127.1.2.1:0 --access-log off --log-level error --shutdown-delay 0s \
      --shutdown-grace 0s &
    pid=$!; sleep 0.5
    before=$(ticks $pid)
    taskset -c 1 dnsperf -s 127.1.2.1 -p 5353 -d "$work/queries" -c "$clients" -l "$secs" \
      > "$work/out" 2>&1
    after=$(ticks $pid)
    kill -TERM $pid; wait $pid || true
    python3 - "$work/out" "$which" "$((after - before))" "$(getconf CLK_TCK)" >> "$results" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
num = lambda label: float(re.search(label + r":\s+([\d.]+)", text).group(1))
done, qps = num("Queries completed"), num("Queries per second")
cpu_us = int(sys.argv[3]) / int(sys.argv[4]) * 1e6
print(json.dumps({"which": sys.argv[2], "qps": qps, "latency_us": num("Average Latency \\(s\\)") * 1e6,
                  "lost": int(num("Queries lost")), "cpu_us_per_query": cpu_us / done}))
PY
  done
done

python3 - "$results" "$a" "$b" "$clients" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"DNS/UDP A/B with dnsperf, {sys.argv[4]} clients, {len(rows)//2} rounds")
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}")
print("| build | qps median (min–max) | avg latency µs | dermaga CPU µs/query median (min–max) | lost |")
print("|---|---|---|---|---|")
med = {}
for who in ("A", "B"):
    r = [x for x in rows if x["which"] == who]
    q = [x["qps"] for x in r]; c = [x["cpu_us_per_query"] for x in r]
    med[who] = (statistics.median(q), statistics.median(c))
    print(f"| {who} | {med[who][0]:.0f} ({min(q):.0f}–{max(q):.0f}) | {statistics.median(x['latency_us'] for x in r):.0f} "
          f"| {med[who][1]:.2f} ({min(c):.2f}–{max(c):.2f}) | {sum(x['lost'] for x in r)} |")
print(f"\nB/A qps: {med['B'][0]/med['A'][0]:.3f}; B/A CPU per query: {med['B'][1]/med['A'][1]:.3f}")
PY
