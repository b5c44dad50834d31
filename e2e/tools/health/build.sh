#!/usr/bin/env bash
# Build overseer-health (Argo CD's Lua VM, kstatus and cyclonus's NetworkPolicy engine, pinned in
# go.mod/go.sum here) into $OVERSEER_CACHE/tools/bin once; rebuilt only when its sources change.
# About three minutes of CPU with a cold build cache (cyclonus brings client-go; one minute without).
exec "$(dirname "$0")/../build-module.sh" "$(dirname "$0")" overseer-health
