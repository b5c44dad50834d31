#!/usr/bin/env bash
# Build overseer-crbench (the dispatch benchmark's controller-runtime contender, pinned in
# go.mod/go.sum here) into $OVERSEER_CACHE/tools/bin once; rebuilt only when its sources change.
# Only the benchmark needs it (python -m e2e.bench.dispatch builds it on demand); about two
# minutes of CPU with a cold build cache.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BIN=${OVERSEER_CACHE:-$REPO/.cache}/tools/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
STAMP=$(cd "$HERE" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)
if [ -x "$BIN/overseer-crbench" ] && [ "$(cat "$BIN/.overseer-crbench.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "overseer-crbench up to date in $BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build overseer-crbench" >&2; exit 1; }
mkdir -p "$BIN"
T0=$SECONDS
(cd "$HERE" && nice -n 10 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$BIN/overseer-crbench" .)
echo "$STAMP" > "$BIN/.overseer-crbench.stamp"
echo "overseer-crbench built in $((SECONDS - T0)) s into $BIN"
