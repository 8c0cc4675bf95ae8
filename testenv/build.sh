#!/usr/bin/env bash
# Builds the real Kubernetes API server, etcd and kubectl that dermaga's Kubernetes tests run
# against, from their published Go modules (testenv/kube-apiserver/go.mod, testenv/etcd/go.mod),
# into a cache directory keyed by version. A run with the binaries present builds nothing.
#
#   testenv/build.sh     build (or reuse); prints kube-apiserver=PATH, etcd=PATH, kubectl=PATH,
#                        gateway-api-crds=PATH, helm=PATH (helm v4 from testenv/helm/go.mod)
#
# The last is one manifest of the standard-channel CRDs of the Gateway API release that
# testenv/gateway-api/go.mod requires, copied from that Go module (not from this repository).
#
# Environment: TESTENV_CACHE (default ~/.cache/dermaga-testenv; not DERMAGA_..., a prefix the
# gateway's flags read from the environment, which tests/it/deploy.rs refuses to see set). Needs Go >= 1.26 and the
# Go module proxy; when either is missing it says which and exits 1 (it never skips).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# The versions are the ones the two go.mod files require.
module_version() { # go.mod module
  awk -v m="$2" '{ if ($1 == "require") { $1 = ""; $0 = $0 } } $1 == m { print $2; exit }' "$1"
}
KUBE_VERSION=$(module_version "$here/kube-apiserver/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(module_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ $KUBE_VERSION == v1.* && $ETCD_VERSION == v3.* ]] || { echo "testenv: cannot read the versions from the go.mod files ($KUBE_VERSION, $ETCD_VERSION)" >&2; exit 1; }
GATEWAY_API_VERSION=$(module_version "$here/gateway-api/go.mod" sigs.k8s.io/gateway-api)
[[ $GATEWAY_API_VERSION == v1.* ]] || { echo "testenv: cannot read the Gateway API version from testenv/gateway-api/go.mod ($GATEWAY_API_VERSION)" >&2; exit 1; }
cache="${TESTENV_CACHE:-$HOME/.cache/dermaga-testenv}"
apiserver="$cache/kube-apiserver-$KUBE_VERSION"
kubectl="$cache/kubectl-$KUBE_VERSION"
etcd="$cache/etcd-$ETCD_VERSION"

missing_go() {
  echo "testenv: 'go' is not on PATH: the Kubernetes tests build kube-apiserver $KUBE_VERSION, kubectl and etcd $ETCD_VERSION from Go modules and need Go >= 1.26 (https://go.dev/doc/install)" >&2
  exit 1
}

build() { # name output module-dir package
  local name=$1 out=$2 dir=$3 pkg=$4
  if [[ -x "$out" ]]; then return 0; fi
  command -v go >/dev/null || missing_go
  mkdir -p "$cache"
  echo "testenv: building $name into $out (cold: minutes, ~2 GB of memory)" >&2
  local start=$SECONDS
  local v="k8s.io/component-base/version" minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  # The version stamp: without it kubectl cannot parse the server's version.
  local ldflags="-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  # GOEXPERIMENT=nojsonv2: built with Go 1.27, kube-openapi emits a broken OpenAPI document.
  if ! (cd "$dir" && GOFLAGS=-mod=mod GOEXPERIMENT=nojsonv2 CGO_ENABLED=0 \
        go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg"); then
    rm -f "$out.tmp"
    echo "testenv: building $name failed; if the messages above say a module could not be downloaded, this machine cannot reach the Go module proxy ($(go env GOPROXY))" >&2
    exit 1
  fi
  mv "$out.tmp" "$out"
  echo "testenv: built $name in $((SECONDS - start)) s" >&2
}

build "kube-apiserver $KUBE_VERSION" "$apiserver" "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
build "kubectl $KUBE_VERSION" "$kubectl" "$here/kube-apiserver" k8s.io/kubernetes/cmd/kubectl
build "etcd $ETCD_VERSION" "$etcd" "$here/etcd" .
# helm v4 for the chart tests (deploy/helm/dermaga), from testenv/helm/go.mod.
HELM_VERSION=$(module_version "$here/helm/go.mod" helm.sh/helm/v4)
[[ $HELM_VERSION == v4.* ]] || { echo "testenv: cannot read the helm version from testenv/helm/go.mod ($HELM_VERSION)" >&2; exit 1; }
helm="$cache/helm-$HELM_VERSION"
if [[ ! -x "$helm" ]]; then
  command -v go >/dev/null || missing_go
  mkdir -p "$cache"
  echo "testenv: building helm $HELM_VERSION into $helm (cold: about 2 minutes)" >&2
  start=$SECONDS
  if ! (cd "$here/helm" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        -o "$helm.tmp" helm.sh/helm/v4/cmd/helm); then
    rm -f "$helm.tmp"
    echo "testenv: building helm failed; if the messages above say a module could not be downloaded, this machine cannot reach the Go module proxy ($(go env GOPROXY))" >&2
    exit 1
  fi
  mv "$helm.tmp" "$helm"
  echo "testenv: built helm in $((SECONDS - start)) s" >&2
fi
# The standard-channel CRDs of sigs.k8s.io/gateway-api, as its standard-install.yaml has them.
crds="$cache/gateway-api-$GATEWAY_API_VERSION-standard-crds.yaml"
if [[ ! -s "$crds" ]]; then
  command -v go >/dev/null || missing_go
  mkdir -p "$cache"
  if ! info=$(cd "$here/gateway-api" && go mod download -json sigs.k8s.io/gateway-api); then
    echo "testenv: downloading sigs.k8s.io/gateway-api $GATEWAY_API_VERSION failed; this machine cannot reach the Go module proxy ($(go env GOPROXY))" >&2
    exit 1
  fi
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
  shopt -s nullglob
  files=("$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml)
  if (( ${#files[@]} == 0 )); then
    echo "testenv: sigs.k8s.io/gateway-api $GATEWAY_API_VERSION has no config/crd/standard/*.yaml in $dir" >&2
    exit 1
  fi
  for f in "${files[@]}"; do printf -- '---\n'; cat "$f"; done >"$crds.tmp"
  mv "$crds.tmp" "$crds"
  echo "testenv: Gateway API $GATEWAY_API_VERSION standard CRDs (${#files[@]} files) into $crds" >&2
fi

echo "kube-apiserver=$apiserver"
echo "etcd=$etcd"
echo "kubectl=$kubectl"
echo "gateway-api-crds=$crds"
echo "helm=$helm"
