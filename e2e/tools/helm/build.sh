#!/usr/bin/env bash
# Build the real Helm CLI from its Go module (helm.sh/helm/v4, pinned in this folder's
# go.mod/go.sum): no binary downloads. The binary lands in $OVERSEER_CACHE/tools/bin/helm and
# is reused while the stamp matches the pinned version. Go's module and build caches stay
# where Go keeps them, as for the control plane.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CACHE=${OVERSEER_CACHE:-$REPO/.cache}
TOOLS=$CACHE/tools
BIN=$TOOLS/bin
HELM_VERSION=v4.3.1      # must match the require line in go.mod
STAMP="helm=$HELM_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
mkdir -p "$BIN" "$TOOLS/logs"

if [ -x "$BIN/helm" ] && [ -f "$BIN/.stamp-helm" ] && [ "$(cat "$BIN/.stamp-helm")" = "$STAMP" ]; then
  echo "helm up to date in $BIN ($STAMP)"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build helm" >&2; exit 1; }
grep -q "helm.sh/helm/v4 $HELM_VERSION" "$HERE/go.mod" || { echo "HELM_VERSION=$HELM_VERSION differs from $HERE/go.mod" >&2; exit 1; }

# Helm's own Makefile stamps these; without them `helm version` prints v4.3 with no patch.
V=helm.sh/helm/v4/internal/version
LDFLAGS="-s -w -X $V.version=$HELM_VERSION -X $V.metadata= -X $V.gitTreeState=clean"

# The pinned module is copied out of the repository so go never rewrites tracked files.
SRC=$TOOLS/src/helm
rm -rf "$SRC"; mkdir -p "$SRC"; cp "$HERE/go.mod" "$HERE/go.sum" "$SRC/"
echo "building helm $HELM_VERSION into $BIN; the first build takes about 4 minutes"
T0=$SECONDS
(cd "$SRC" && nice -n 10 go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/helm" helm.sh/helm/v4/cmd/helm) \
  >"$TOOLS/logs/build-helm.log" 2>&1 || { tail -30 "$TOOLS/logs/build-helm.log" >&2; echo "helm build failed (log: $TOOLS/logs/build-helm.log)" >&2; exit 1; }
"$BIN/helm" version --short
echo "$STAMP" > "$BIN/.stamp-helm"
echo "helm built in $((SECONDS - T0)) s into $BIN"
