#!/usr/bin/env bash
# Stop the control plane started by up.sh: each process by the PID up.sh recorded, in reverse
# start order, TERM first and KILL after a grace period. Nothing it started keeps running.
# Env: WIPE=1 also removes the state (etcd data, certificates, logs).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${OVERSEER_CACHE:-$REPO/.cache}
CP=$CACHE/control-plane
BIN=$CP/bin
RUN=$CP/run
GRACE_S=${GRACE_S:-10}
rc=0

if [ "$(cat "$RUN/mode" 2>/dev/null)" = kind ]; then
  if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx overseer; then
    kind delete cluster --name overseer && rm -f "$RUN/mode"
  fi
else
  runs_binary() { # runs_binary PID NAME: PID is alive and runs $BIN/NAME (guards against PID reuse)
    local cmd; cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == "$BIN/$2 "* ]]
  }
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f=$RUN/pids/$name.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [ -n "$pid" ] && runs_binary "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 $((GRACE_S * 10))); do runs_binary "$pid" "$name" || break; sleep 0.1; done
      if runs_binary "$pid" "$name"; then
        echo "$name ($pid) did not exit after ${GRACE_S}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null
        for _ in $(seq 1 50); do runs_binary "$pid" "$name" || break; sleep 0.1; done
      fi
      if runs_binary "$pid" "$name"; then
        echo "$name ($pid) is still running" >&2; rc=1; continue
      fi
      # the process has exited; give its parent (init) a moment to reap it so that nothing,
      # not even a zombie, is left in the process table
      for _ in $(seq 1 30); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
      echo "stopped $name ($pid)"
    fi
    rm -f "$f"
  done
fi
if [ "${WIPE:-0}" = 1 ] && [ -d "$RUN" ] && [ "$rc" = 0 ]; then
  rm -rf "$RUN" && echo "wiped $RUN"
fi
exit $rc
