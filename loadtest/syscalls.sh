#!/usr/bin/env bash
# System calls per operation made by dermaga and by nginx (stream) on the same workload: the
# kernel does most of a proxy's work on small messages and new connections, so the count of
# calls (and which ones) is what separates proxies there. Counts come from perf's syscall
# tracepoints on the proxy process only, over the whole load run, divided by the operations
# the load tool completed.
# Needs perf (linux-perf), root (tracepoints), nginx-light + libnginx-mod-stream, taskset.
# Usage: loadtest/syscalls.sh [conn|rr] [SECONDS]
#   conn: new connections (connect, 64 B round trip, close; 50 at a time): calls per connection
#   rr:   64 B request/response on 50 keep-alive connections: calls per request
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
workload=${1:-conn}; secs=${2:-3}
for tool in perf taskset nginx; do
  command -v $tool >/dev/null || { echo "$tool is missing: apt-get install linux-perf util-linux nginx-light libnginx-mod-stream" >&2; exit 1; }
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || { echo "nginx's stream module is missing: apt-get install libnginx-mod-stream" >&2; exit 1; }
cargo build --release -q -p dermaga -p loadtest
lt=target/release/loadtest
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

taskset -c 1 $lt backend --listen 127.0.0.2:19101 >/dev/null &
single_backend_config "$work/dermaga.yaml" 19101
cat > "$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
user root;
pid $work/nginx.pid;
error_log $work/nginx.log error;
events { worker_connections 4096; }
stream {
  access_log off;
  server { listen 127.1.2.3:10000 backlog=4096; proxy_pass 127.0.0.2:19101; }
}
CONF

case $workload in
  conn) load=(conn --concurrency 50); key=connections ;;
  rr) load=(rr --connections 50); key=requests ;;
  *) echo "workload: conn or rr" >&2; exit 2 ;;
esac

measure() { # name pid target
  local name=$1 pid=$2 target=$3
  # Counted over the whole load run, so the operations are exactly the load tool's count.
  perf stat -x, -e 'syscalls:sys_enter_*' -p "$pid" -o "$work/$name.perf" -- \
    taskset -c 1 $lt "${load[@]}" --target "$target" --duration "${secs}s" > "$work/$name.load.json"
  python3 - "$work/$name.load.json" "$work/$name.perf" "$name" "$key" >> "$work/rows.jsonl" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
rate = load.get("conn_per_sec") or load.get("req_per_sec")
ops = load[sys.argv[4]] - load.get("failed", 0)
calls = {}
for line in open(sys.argv[2]):
    parts = line.strip().split(",")
    if len(parts) < 3 or not parts[0].replace(".", "").isdigit():
        continue
    n, event = float(parts[0]), parts[2]
    if n > 0:
        calls[event.replace("syscalls:sys_enter_", "")] = n / ops
print(json.dumps({"name": sys.argv[3], "rate": rate, "calls": calls}))
PY
}

taskset -c 0 target/release/dermaga --config "$work/dermaga.yaml" --listen-address 127.1.2.2 \
  --admin-address 127.1.2.2:0 --access-log off --log-level warn --shutdown-delay 0s &
dermaga=$!
wait_for_port 127.1.2.2 10000
measure dermaga $dermaga 127.1.2.2:10000
kill -TERM $dermaga; wait $dermaga || true

taskset -c 0 nginx -c "$work/nginx.conf" &
wait_for_port 127.1.2.3 10000
worker=$(pgrep -f "nginx: worker process" | head -1)
measure nginx "$worker" 127.1.2.3:10000

python3 - "$work/rows.jsonl" "$workload" "$key" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = sorted({c for r in rows for c in r["calls"]}, key=lambda c: -max(r["calls"].get(c, 0) for r in rows))
per = "connection" if sys.argv[2] == "conn" else "request"
print(f"System calls per {per} ({sys.argv[2]} workload; rate in {sys.argv[3]}/s: " + ", ".join(f"{r['name']} {r['rate']:,.0f}" for r in rows) + ")\n")
print("| call | " + " | ".join(r["name"] for r in rows) + " |")
print("|---|" + "---|" * len(rows))
for c in names:
    print(f"| {c} | " + " | ".join(f"{r['calls'].get(c, 0):.2f}" for r in rows) + " |")
print("| **total** | " + " | ".join(f"**{sum(r['calls'].values()):.2f}**" for r in rows) + " |")
PY
