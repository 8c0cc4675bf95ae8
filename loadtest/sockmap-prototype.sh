#!/usr/bin/env bash
# Issue 19's moonshot, measured before kept (and not kept): forwarding established TCP
# connections inside the kernel with a BPF sockmap. The prototype lives only in commit b7489bb
# (`--kernel-forward`); this script builds that commit in a temporary worktree and compares it,
# in alternating rounds, with its own default path (splice), using real clients:
#   iperf3 1 and 4 streams (5 s), redis-benchmark PING_MBULK with 50 keep-alive clients and with
#   -k 0, and a memory check (a client sends 2 GB to a backend that accepts and never reads).
# The proxy is pinned to CPU 1, clients and servers to CPU 0. Kernel forwarding runs in softirq
# and in kernel workers, mostly on the sender's CPU, so beside the proxy process's CPU
# (/proc/PID/stat) this reports the whole machine's busy CPU (/proc/stat: user, nice, system,
# irq, softirq) per MB or per request.
# Needs root (CAP_BPF), iperf3, redis-server, redis-tools, python3, taskset.
# Usage: [DERMAGA_PROTOTYPE=a build of b7489bb] loadtest/sockmap-prototype.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
for tool in iperf3 redis-server redis-benchmark python3 taskset; do
  command -v $tool >/dev/null || { echo "$tool is missing: apt-get install iperf3 redis-server redis-tools python3 util-linux" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'pkill -f "iperf3 -s -p 5501" || true; pkill -f "redis-server .*5504" || true; pkill -f "$work/dermaga" || true; git worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if [ -n "${DERMAGA_PROTOTYPE:-}" ]; then
  cp "$DERMAGA_PROTOTYPE" "$work/dermaga"   # a build of b7489bb made before
else
  git worktree add -q --detach "$work/src" b7489bb
  (cd "$work/src" && cargo build --release -q -p dermaga)
  cp "$work/src/target/release/dermaga" "$work/dermaga"
fi
# A Service and its EndpointSlice: NAME, the backend's port on 127.0.0.1.
service() {
  cat <<Y
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec: {ports: [{name: tcp, port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: tcp, port: $2, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"]}]
Y
}
{
  cat <<'Y'
apiVersion: v1
kind: ConfigMap
metadata: {name: tcp-services, namespace: dermaga}
data: {"5502": "default/iperf:80", "5503": "default/redis:80", "5506": "default/stuck:80"}
Y
  service iperf 5501
  service redis 5504
  service stuck 5505
} > "$work/routes.yaml"
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
proxy_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
taskset -c 0 iperf3 -s -p 5501 >/dev/null 2>&1 &
taskset -c 0 redis-server --port 5504 --save '' --appendonly no >/dev/null 2>&1 &
sleep 0.5
echo "round mode workload rate machine-CPU proxy-process-CPU"
for r in $(seq "$rounds"); do
  for mode in splice kernel; do
    flag=(); [ $mode = kernel ] && flag=(--kernel-forward)
    taskset -c 1 "$work/dermaga" --config "$work/routes.yaml" --listen-address 127.0.0.1 \
      --admin-address 127.0.0.1:0 --worker-threads 1 --access-log off --log-level warn "${flag[@]}" \
      >"$work/$mode.log" 2>&1 &
    pid=$!; sleep 0.6
    for w in iperf1 iperf4 redis redis-new; do
      case $w in
        iperf1) cmd=(iperf3 -c 127.0.0.1 -p 5502 -t 5 -J);;
        iperf4) cmd=(iperf3 -c 127.0.0.1 -p 5502 -t 5 -P 4 -J);;
        redis) n=300000; cmd=(redis-benchmark -h 127.0.0.1 -p 5503 -c 50 -n $n -t ping_mbulk -q);;
        redis-new) n=40000; cmd=(redis-benchmark -h 127.0.0.1 -p 5503 -c 50 -n $n -k 0 -t ping_mbulk -q);;
      esac
      b0=$(busy); p0=$(proxy_ticks $pid)
      out=$(taskset -c 0 "${cmd[@]}" 2>&1)
      b1=$(busy); p1=$(proxy_ticks $pid)
      if [[ $w == iperf* ]]; then
        read -r gbps mb < <(echo "$out" | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"]/1e9, e["bytes"]/1e6)')
        python3 -c "print(f'$r $mode $w {$gbps:.2f} Gbit/s {($b1-$b0)*$tick_us/$mb:.0f} us/MB {($p1-$p0)*$tick_us/$mb:.0f} us/MB')"
      else
        rps=$(echo "$out" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
        python3 -c "print(f'$r $mode $w {float(\"$rps\"):.0f} req/s {($b1-$b0)*$tick_us/$n:.1f} us/req {($p1-$p0)*$tick_us/$n:.1f} us/req')"
      fi
    done
    kill -9 $pid; wait $pid 2>/dev/null || true
  done
done
# Memory: a backend that accepts and never reads; a client that sends 2 GB and keeps its
# connection open. What the kernel holds shows as MemAvailable falling.
for mode in splice kernel; do
  flag=(); [ $mode = kernel ] && flag=(--kernel-forward)
  python3 -c "
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 5505)); s.listen(); c,_=s.accept(); time.sleep(8)" &
  stuck=$!; sleep 0.3
  taskset -c 1 "$work/dermaga" --config "$work/routes.yaml" --listen-address 127.0.0.1 \
    --admin-address 127.0.0.1:0 --access-log off --log-level warn "${flag[@]}" >"$work/$mode.log" 2>&1 &
  pid=$!; sleep 0.6
  before=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
  python3 -c "
import socket,time
c=socket.create_connection(('127.0.0.1', 5506)); c.settimeout(4); block=bytes(1<<20); sent=0
try:
    while sent < 2000<<20: sent += c.send(block)
except socket.timeout: pass
print(sent>>20)" > "$work/sent" &
  sleep 4.5
  after=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
  wait $!
  echo "memory $mode: client sent $(cat "$work/sent") MiB to a backend that never reads; MemAvailable fell $(( (before - after) / 1024 )) MiB"
  kill -9 $pid $stuck 2>/dev/null; wait $pid $stuck 2>/dev/null || true
done
