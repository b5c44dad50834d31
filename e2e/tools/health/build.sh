#!/usr/bin/env bash
# Build overseer-health (Argo CD's Lua VM, kstatus and cyclonus's NetworkPolicy engine, pinned in
# go.mod/go.sum here) into $OVERSEER_CACHE/tools/bin once; rebuilt only when its sources change.
# About three minutes of CPU with a cold build cache (cyclonus brings client-go; one minute without).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BIN=${OVERSEER_CACHE:-$REPO/.cache}/tools/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
STAMP=$(cd "$HERE" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)
if [ -x "$BIN/overseer-health" ] && [ "$(cat "$BIN/.overseer-health.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "overseer-health up to date in $BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build overseer-health" >&2; exit 1; }
mkdir -p "$BIN"
T0=$SECONDS
(cd "$HERE" && nice -n 10 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$BIN/overseer-health" .)
echo "$STAMP" > "$BIN/.overseer-health.stamp"
echo "overseer-health built in $((SECONDS - T0)) s into $BIN"
