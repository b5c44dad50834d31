#!/usr/bin/env bash
# Build the real Prometheus server and promtool from their Go module
# (github.com/prometheus/prometheus, pinned in this folder's go.mod/go.sum as tool directives):
# no binary downloads. ONE `go build` of both commands, so the packages they share (PromQL,
# TSDB, rule evaluation, service discovery) compile once: about 10 minutes cold on 2 cores.
# The binaries land in $OVERSEER_CACHE/tools/bin and are reused while the stamp matches.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CACHE=${OVERSEER_CACHE:-$REPO/.cache}
TOOLS=$CACHE/tools
BIN=$TOOLS/bin
PROMETHEUS_VERSION=v0.316.0      # must match the require line in go.mod
STAMP="prometheus=$PROMETHEUS_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
mkdir -p "$BIN" "$TOOLS/logs"

if [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ] && [ -f "$BIN/.stamp-prometheus" ] \
   && [ "$(cat "$BIN/.stamp-prometheus")" = "$STAMP" ]; then
  echo "prometheus and promtool up to date in $BIN ($STAMP)"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build prometheus" >&2; exit 1; }
grep -q "github.com/prometheus/prometheus $PROMETHEUS_VERSION" "$HERE/go.mod" \
  || { echo "PROMETHEUS_VERSION=$PROMETHEUS_VERSION differs from $HERE/go.mod" >&2; exit 1; }

# What Prometheus's own Makefile stamps, so `prometheus --version` names the pinned release.
V=github.com/prometheus/common/version
LDFLAGS="-s -w -X $V.Version=$PROMETHEUS_VERSION -X $V.Branch=HEAD -X $V.BuildUser=overseer"

# The pinned module is copied out of the repository so go never rewrites tracked files.
SRC=$TOOLS/src/prometheus
rm -rf "$SRC"; mkdir -p "$SRC"; cp "$HERE/go.mod" "$HERE/go.sum" "$SRC/"
OUT=$SRC/out; mkdir -p "$OUT"
echo "building prometheus and promtool $PROMETHEUS_VERSION into $BIN; the first build takes about 10 minutes"
T0=$SECONDS
(cd "$SRC" && nice -n 10 go build -trimpath -ldflags "$LDFLAGS" -o "$OUT/" \
   github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool) \
  >"$TOOLS/logs/build-prometheus.log" 2>&1 \
  || { tail -30 "$TOOLS/logs/build-prometheus.log" >&2; echo "prometheus build failed (log: $TOOLS/logs/build-prometheus.log)" >&2; exit 1; }
mv "$OUT/prometheus" "$OUT/promtool" "$BIN/"
"$BIN/prometheus" --version | head -1
"$BIN/promtool" --version | head -1
echo "$STAMP" > "$BIN/.stamp-prometheus"
echo "prometheus and promtool built in $((SECONDS - T0)) s into $BIN"
