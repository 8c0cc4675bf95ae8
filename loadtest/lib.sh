# Shared by the loadtest shell scripts (sourced, not run).

# single_backend_config FILE BACKEND_PORT: a --config file mapping TCP port 10000 to one
# endpoint, 127.0.0.2:BACKEND_PORT (a `loadtest backend`).
single_backend_config() {
  cat > "$1" <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: tcp-services, namespace: dermaga}
data: {"10000": "default/bench:80"}
---
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{port: $2}]
endpoints: [{addresses: ["127.0.0.2"]}]
YAML
}

# wait_for_port HOST PORT: until a TCP connect to HOST:PORT succeeds (at most 5 s).
wait_for_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on $1:$2 after 5 s" >&2
  return 1
}

# start_dnsmasq PIDFILE: dnsmasq on 127.0.0.2:5300 (CPU 1), answering example.test with
# 10.0.0.1, in the background (a job of the calling shell).
start_dnsmasq() {
  taskset -c 1 dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address=127.0.0.2 --port=5300 --address=/example.test/10.0.0.1 --pid-file="$1" \
    --user=root --group=root --log-facility=- 2>/dev/null &
}

# dns_backend_config FILE: a --config file mapping UDP port 5353 to that dnsmasq.
dns_backend_config() {
  cat > "$1" <<YAML
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
}
