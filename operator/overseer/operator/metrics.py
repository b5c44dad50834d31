"""Prometheus metrics of the operator: counters and histograms updated as it works, and gauges
read from its caches when scraped."""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from overseer.api import Phase
from overseer.approvals import decision
from overseer.kube import parse_time

Raw = dict[str, Any]

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

GOAL_START_SECONDS = Histogram(
    "overseer_goal_start_latency_seconds", "Time from a goal's creation to the pod of its first attempt",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400))


def observe_start(goal: Raw) -> None:
    """A goal's first pod was just created: how long the goal waited for it."""
    created = goal["metadata"].get("creationTimestamp")
    if created:
        waited = time.time() - parse_time(created).timestamp()
        GOAL_START_SECONDS.observe(max(0.0, waited))


class CacheCollector(Collector):
    """Gauges worked out from the operator's caches at scrape time, so they cannot drift from
    what the API server holds: goals by namespace, agent and phase; approvals waiting for a
    person and the age of the oldest, by namespace."""

    def __init__(self) -> None:
        self.goals: Callable[[], list[Raw]] = list  # the goals cache, once the operator runs

    def collect(self) -> Iterator[Metric]:
        by_phase: Counter_[tuple[str, str, str]] = Counter_()
        waiting: Counter_[str] = Counter_()
        oldest: dict[str, float] = {}
        now = time.time()
        for raw in self.goals():
            ns = raw["metadata"].get("namespace") or ""
            status = raw.get("status") or {}
            phase = status.get("phase") or Phase.PENDING.value
            by_phase[(ns, status.get("agent") or "", phase)] += 1
            if phase != Phase.AWAITING_APPROVAL.value:
                continue
            for request in status.get("pendingApprovals") or []:
                if decision(raw, request.get("id", "")) is not None:
                    continue
                waiting[ns] += 1
                asked = request.get("requestedAt")
                if asked:
                    at = parse_time(asked).timestamp()
                    oldest[ns] = max(oldest.get(ns, 0.0), now - at)
        goals = GaugeMetricFamily("overseer_goals", "Goals by namespace, agent (empty before one is assigned) "
                                  "and phase", labels=["namespace", "agent", "phase"])
        for (ns, agent, phase), n in sorted(by_phase.items()):
            goals.add_metric([ns, agent, phase], n)
        pending = GaugeMetricFamily("overseer_approvals_pending", "Approval requests waiting for a person's decision",
                                    labels=["namespace"])
        for ns, n in sorted(waiting.items()):
            pending.add_metric([ns], n)
        age = GaugeMetricFamily("overseer_approval_oldest_pending_age_seconds",
                                "How long the oldest approval request still waiting has waited", labels=["namespace"])
        for ns, seconds in sorted(oldest.items()):
            age.add_metric([ns], seconds)
        return iter([goals, pending, age])


CACHE = CacheCollector()
REGISTRY.register(CACHE)
