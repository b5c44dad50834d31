"""/healthz and /readyz (--health-port): whether the process works, and whether it is the
replica that should count as serving.

The answers come from a thread of their own, so a blocked event loop is reported with what is
wrong rather than by a probe that times out, and the checks are pure functions of a snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typing import TYPE_CHECKING

from overseer.kube import WATCH_READ_SECONDS

from .informer import MAX_BACKOFF, WATCH_SECONDS

if TYPE_CHECKING:
    from .controller import Operator
    from .leader import LeaderElection

logger = logging.getLogger(__name__)

# The loop ticks every second; one callback holding it this long is a wedge, not a busy moment
# (a relist of 10,000 goals holds it for about a second).
LOOP_STALL_SECONDS = 30.0
# Every watch is ended by the server within WATCH_SECONDS, or by the client after
# WATCH_READ_SECONDS of silence; either way the informer watches (or lists) again after at most
# MAX_BACKOFF. One that has done nothing for longer is stuck, however quiet the cluster is.
INFORMER_SILENCE_SECONDS = max(*WATCH_SECONDS, WATCH_READ_SECONDS) + MAX_BACKOFF + 60.0


@dataclass(frozen=True)
class InformerState:
    name: str
    synced: bool
    last_progress: float
    last_error: str = ""
    stopped: str | None = None  # why its task ended, if it did


@dataclass(frozen=True)
class Snapshot:
    now: float
    loop_tick: float
    informers: tuple[InformerState, ...] = ()
    started: bool = False  # the informers are running
    reconciling: bool = False  # the reconcilers are (as the leader, under leader election)
    lease: str | None = None  # under --leader-elect: namespace/name of the Lease
    leading: bool = False
    holder: str | None = None  # who holds the Lease, as last seen


def liveness(s: Snapshot) -> tuple[bool, str]:
    """False when the process no longer works: its event loop or an informer is stuck. A quiet
    cluster, an API server that refuses (the informer keeps retrying) or a standby replica
    (no informers yet) is alive."""
    stalled = s.now - s.loop_tick
    if stalled > LOOP_STALL_SECONDS:
        return False, f"event loop blocked for {stalled:.0f} s"
    for i in s.informers:
        if i.stopped is not None:
            return False, f"{i.name} stopped: {i.stopped}"
        silent = s.now - i.last_progress
        if silent > INFORMER_SILENCE_SECONDS:
            return False, f"{i.name} made no progress for {silent:.0f} s"
    return True, "ok"


def readiness(s: Snapshot) -> tuple[bool, str]:
    """True once every cache is filled: for the leader, which reconciles, and for a standby, which
    keeps its caches warm to take over with (were standbys never ready, a rolling update would wait
    for them for ever and a PodDisruptionBudget would pin the leader's node). False for a replica
    that lost its Lease: it stops reconciling and exits."""
    if s.lease is not None and s.reconciling and not s.leading:
        return False, f"lost Lease {s.lease}"
    if not s.started or not s.informers:
        return False, "starting"
    filling = [i for i in s.informers if not i.synced]
    if filling:
        why = "; ".join(f"{i.name}{': ' + i.last_error if i.last_error else ''}" for i in filling)
        return False, f"caches not filled: {why}"
    if s.lease is not None and not s.leading:
        return True, f"standby: caches filled, waiting for Lease {s.lease}" + (f" (held by {s.holder})" if s.holder else "")
    return True, "ok"


def task_state(task: asyncio.Task[None]) -> str | None:
    """Why a task ended, or None while it runs (safe to call from another thread)."""
    if not task.done():
        return None
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return f"{type(error).__name__}: {error}" if error else "returned"


class HealthServer:
    """Serves the two probes on 0.0.0.0:port from a daemon thread."""

    def __init__(self, port: int, snapshot: Callable[[], Snapshot]) -> None:
        checks = {"/healthz": liveness, "/readyz": readiness}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                check = checks.get(self.path.split("?")[0])
                if check is None:
                    self.send_error(404, "only /healthz and /readyz")
                    return
                ok, reason = check(snapshot())
                body = (reason + "\n").encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Probes:
    """What the probes look at, filled in as the operator starts (handlers.startup)."""

    def __init__(self) -> None:
        self.loop_tick = time.monotonic()
        self.operator: Operator | None = None
        self.election: LeaderElection | None = None  # under --leader-elect

    async def beat(self) -> None:
        """Show the event loop turning."""
        while True:
            self.loop_tick = time.monotonic()
            await asyncio.sleep(1.0)

    def snapshot(self) -> Snapshot:
        operator, election = self.operator, self.election
        informers: tuple[InformerState, ...] = ()
        started = reconciling = False
        if operator is not None:
            started, reconciling = operator.started, operator.reconciling
            informers = tuple(
                InformerState(repr(i), i.synced.is_set(), i.last_progress, i.last_error, task_state(task))
                for i, task in operator.watching)
        return Snapshot(now=time.monotonic(), loop_tick=self.loop_tick, informers=informers, started=started,
                        reconciling=reconciling,
                        lease=election.lease if election else None, leading=bool(election and election.leading),
                        holder=election.holder if election else None)
