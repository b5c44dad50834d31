#!/usr/bin/env bash
# Build the Go command in one of these folders (a module of its own, pinned in its go.mod/go.sum)
# into $OVERSEER_CACHE/tools/bin once; rebuilt only when its sources change.
# Usage: build-module.sh FOLDER NAME (each tool's build.sh calls it with its own folder).
set -euo pipefail
HERE=$(cd "$1" && pwd)
NAME=$2
REPO=$(cd "$HERE/../../.." && pwd)
BIN=${OVERSEER_CACHE:-$REPO/.cache}/tools/bin
export GOTOOLCHAIN=local CGO_ENABLED=0 PATH=/usr/local/go/bin:$PATH
STAMP=$(cd "$HERE" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)
if [ -x "$BIN/$NAME" ] && [ "$(cat "$BIN/.$NAME.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "$NAME up to date in $BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is required (>= 1.26) to build $NAME" >&2; exit 1; }
mkdir -p "$BIN"
T0=$SECONDS
(cd "$HERE" && nice -n 10 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$BIN/$NAME" .)
echo "$STAMP" > "$BIN/.$NAME.stamp"
echo "$NAME built in $((SECONDS - T0)) s into $BIN"
