#!/usr/bin/env bash
# DNS over UDP through dermaga vs nginx (stream module, UDP proxy) vs direct, same run:
# dnsmasq answers example.test locally; proxies are pinned to CPU 0 with one worker each,
# dnsmasq and the load to CPU 1; contenders alternate round by round; medians and min–max.
# Needs: dnsmasq (dnsmasq-base), nginx-light + libnginx-mod-stream, taskset (util-linux).
# Usage: loadtest/udp-compare.sh [ROUNDS] [SECONDS] [CLIENTS]   (defaults 3, 5, 50)
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
rounds=${1:-3}; secs=${2:-5}; clients=${3:-50}
missing=()
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v nginx >/dev/null || missing+=(nginx-light)
ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 || missing+=(libnginx-mod-stream)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install with: apt-get install ${missing[*]}" >&2; exit 1
fi
cargo build --release -q -p dermaga -p loadtest
bin=$PWD/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.2; rm -rf "$work"' EXIT

start_dnsmasq "$work/dnsmasq.pid"
dns_backend_config "$work/dermaga.yaml"
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 8192; }
stream {
  server {
    listen 127.1.2.2:5353 udp;
    proxy_pass 127.0.0.2:5300;
    proxy_responses 1;
    proxy_timeout 30s;
  }
}
CONF

results="$work/results.jsonl"
run() { # name target
  taskset -c 1 "$bin/loadtest" dns --target "$2" --clients "$clients" --duration "${secs}s" \
    | sed "s/^/{\"who\": \"$1\", \"r\": /; s/\$/}/" >> "$results"
}
sleep 0.5
for round in $(seq 1 "$rounds"); do
  run direct 127.0.0.2:5300
  taskset -c 0 "$bin/dermaga" --config "$work/dermaga.yaml" --tcp-services-configmap dermaga/none \
    --udp-services-configmap dermaga/udp-services --listen-address 127.1.2.1 \
    --admin-address 127.1.2.1:0 --access-log off --log-level warn &
  pid=$!; sleep 0.5
  run dermaga 127.1.2.1:5353
  kill -TERM $pid; wait $pid || true
  taskset -c 0 nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
  pid=$!; sleep 0.5
  run nginx 127.1.2.2:5353
  kill -TERM $pid; wait $pid || true
done

python3 - "$results" "$(nginx -v 2>&1)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"DNS/UDP, {rows[0]['r']['clients']} clients, {len(rows)//3} rounds; {sys.argv[2]}")
print("| path | qps median (min–max) | avg latency µs median | lost |")
print("|---|---|---|---|")
med = {}
for who in ("direct", "dermaga", "nginx"):
    r = [x["r"] for x in rows if x["who"] == who]
    q = [x["qps"] for x in r]; l = [x["avg_latency_us"] for x in r]
    med[who] = statistics.median(q)
    print(f"| {who} | {statistics.median(q):.0f} ({min(q):.0f}–{max(q):.0f}) | {statistics.median(l):.1f} | {sum(x['lost'] for x in r)} |")
print(f"\ndermaga/nginx qps: {med['dermaga']/med['nginx']:.2f}; dermaga/direct: {med['dermaga']/med['direct']:.2f}")
PY
