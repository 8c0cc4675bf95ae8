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
