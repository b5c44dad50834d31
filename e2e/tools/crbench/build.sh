#!/usr/bin/env bash
# Build overseer-crbench (the dispatch benchmark's controller-runtime contender, pinned in
# go.mod/go.sum here) into $OVERSEER_CACHE/tools/bin once; rebuilt only when its sources change.
# Only the benchmark needs it (python -m e2e.bench.dispatch builds it on demand); about two
# minutes of CPU with a cold build cache.
exec "$(dirname "$0")/../build-module.sh" "$(dirname "$0")" overseer-crbench
