"""Prometheus metrics of the operator."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("overseer_reconcile_total", "Reconciles by kind and result", ["kind", "result"])
RECONCILE_SECONDS = Histogram("overseer_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"],
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_DEPTH = Gauge("overseer_workqueue_depth", "Keys waiting in a work queue", ["kind"])
LEADER = Gauge("overseer_leader", "1 while this replica reconciles (holds the Lease, under --leader-elect)")


def instrumented(kind: str, reconcile: Callable[[Any], Awaitable[float | None]],
                 depth: Callable[[], int]) -> Callable[[Hashable], Awaitable[float | None]]:
    """Wrap a reconcile function with its counters and timing."""
    ok, failed = RECONCILES.labels(kind, "ok"), RECONCILES.labels(kind, "error")
    seconds, queue = RECONCILE_SECONDS.labels(kind), QUEUE_DEPTH.labels(kind)

    async def run(key: Hashable) -> float | None:
        started = time.perf_counter()
        try:
            result = await reconcile(key)
        except Exception:
            failed.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)
            queue.set(depth())
        ok.inc()
        return result

    return run
