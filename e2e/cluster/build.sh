#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), etcd and kwok from Go modules: no container engine, no binary
# downloads. Binaries land in $OVERSEER_CACHE/control-plane/bin and are reused while the
# pinned versions match. Go's module and build caches stay where Go keeps them, so a
# second clone on the same machine rebuilds in seconds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${OVERSEER_CACHE:-$REPO/.cache}
CP=$CACHE/control-plane
BIN=$CP/bin
K8S_VERSION=v1.36.3      # k8s.io/kubernetes; its staging modules are replaced by v0.36.3 in modules/k8s/go.mod
ETCD_VERSION=v3.6.8      # what k8s v1.36.3 pins
KWOK_VERSION=v0.8.0      # built on the v0.36 libraries
STAMP="k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
mkdir -p "$BIN" "$CP/logs"

if [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$STAMP" ]; then
  echo "control plane binaries up to date in $BIN ($STAMP)"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build the control plane" >&2; exit 1; }

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # without these, /version says v0.0.0 and kubectl/helm complain
  LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000 \
    -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step() { # step NAME CMD... : print, run, report wall time
  local name=$1 t0=$SECONDS; shift
  echo "==> $name"
  "$@" >"$CP/logs/build-$name.log" 2>&1 || { tail -30 "$CP/logs/build-$name.log" >&2; echo "build step $name failed (log: $CP/logs/build-$name.log)" >&2; exit 1; }
  echo "    $name done in $((SECONDS - t0)) s"
}

# The pinned modules are copied out of the repository so go never rewrites tracked files.
for m in k8s etcd; do
  rm -rf "$CP/src/$m"; mkdir -p "$CP/src/$m"; cp "$HERE/modules/$m/"* "$CP/src/$m/"
done

echo "building the control plane ($STAMP) into $BIN; the first build takes about 8 minutes"
T0=$SECONDS
(cd "$CP/src/k8s" && step download-modules go mod download)
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  (cd "$CP/src/k8s" && step "$c" nice -n 10 go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
done
(cd "$CP/src/etcd" && step etcd nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
step kwok nice -n 10 env GOBIN="$BIN" go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

# kwok has no built-in behaviour standalone: keep the stage files its module ships.
KW=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo '---'; cat "$KW/$f"
done > "$BIN/kwok-stages.yaml"

echo "$STAMP" > "$BIN/.stamp"
echo "control plane built in $((SECONDS - T0)) s into $BIN"
