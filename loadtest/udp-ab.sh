#!/usr/bin/env bash
# A/B two dermaga builds on DNS over UDP: dnsmasq answers locally, the load sends one query at
# a time per client. Rounds alternate A and B; dermaga is pinned to CPU 0, dnsmasq and the load
# to CPU 1. Prints queries/s, mean latency and dermaga's CPU per query (medians, min–max), and
# B/A ratios.
# Needs: dnsmasq (dnsmasq-base), taskset (util-linux).
# Usage: loadtest/udp-ab.sh A_BINARY B_BINARY [ROUNDS] [SECONDS] [CLIENTS]  (defaults 5, 5, 50)
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1; b=$2; rounds=${3:-5}; secs=${4:-5}; clients=${5:-50}
missing=()
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install with: apt-get install ${missing[*]}" >&2; exit 1
fi
cargo build --release -q -p loadtest
lt=$PWD/target/release/loadtest
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.2; rm -rf "$work"' EXIT

taskset -c 1 dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.2 --port=5300 --address=/example.test/10.0.0.1 \
  --pid-file="$work/dnsmasq.pid" --user=root --group=root --log-facility=- 2>/dev/null &

cat > "$work/dermaga.yaml" <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: udp-services, namespace: dermaga}
data: {"5353": "default/dns:53"}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec: {ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: default, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, port: 5300, protocol: UDP}]
endpoints: [{addresses: ["127.0.0.2"]}]
YAML

results="$work/results.jsonl"
sleep 0.5
for round in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a; [ $which = B ] && bin=$b
    taskset -c 0 "$bin" --config "$work/dermaga.yaml" --tcp-services-configmap dermaga/none \
      --udp-services-configmap dermaga/udp-services --listen-address 127.1.2.1 \
      --admin-address 127.1.2.1:0 --access-log off --log-level warn --shutdown-delay 0s \
      --shutdown-grace 0s &
    pid=$!; sleep 0.5
    r=$(taskset -c 1 "$lt" dns --target 127.1.2.1:5353 --clients "$clients" \
      --duration "${secs}s" --proxy-pid $pid)
    kill -TERM $pid; wait $pid || true
    echo "{\"which\": \"$which\", \"r\": $r}" >> "$results"
  done
done

python3 - "$results" "$a" "$b" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"DNS/UDP A/B, {rows[0]['r']['clients']} clients, {len(rows)//2} rounds")
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}")
print("| build | qps median (min–max) | mean latency µs | CPU µs/query median (min–max) | lost |")
print("|---|---|---|---|---|")
med = {}
for who in ("A", "B"):
    r = [x["r"] for x in rows if x["which"] == who]
    q = [x["qps"] for x in r]; l = [x["avg_latency_us"] for x in r]
    c = [x["proxy_cpu_us_per_query"] for x in r]
    med[who] = (statistics.median(q), statistics.median(c))
    print(f"| {who} | {med[who][0]:.0f} ({min(q):.0f}–{max(q):.0f}) | {statistics.median(l):.1f} "
          f"| {med[who][1]:.2f} ({min(c):.2f}–{max(c):.2f}) | {sum(x['lost'] for x in r)} |")
print(f"\nB/A qps: {med['B'][0]/med['A'][0]:.3f}; B/A CPU per query: {med['B'][1]/med['A'][1]:.3f}")
PY
