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
LEADER = Gauge("overseer_leader", "1 while this replica reconciles (holds the Lease, under --leader-elect)")

# client-go's work-queue set (workqueue_*), one series per queue: goal, agent, capability.
QUEUE_ADDS = Counter("overseer_workqueue_adds_total", "Keys added to a work queue", ["kind"])
QUEUE_DEPTH = Gauge("overseer_workqueue_depth", "Keys waiting in a work queue", ["kind"])
QUEUE_SECONDS = Histogram("overseer_workqueue_queue_duration_seconds", "Time a key waited in the queue before a "
                          "worker took it", ["kind"],
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60))
WORK_SECONDS = Histogram("overseer_workqueue_work_duration_seconds", "Time spent in one reconcile", ["kind"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_RETRIES = Counter("overseer_workqueue_retries_total", "Failed reconciles put back with a backoff", ["kind"])
LONGEST_RUNNING = Gauge("overseer_workqueue_longest_running_processor_seconds",
                        "How long the longest reconcile still running has run", ["kind"])
UNFINISHED = Gauge("overseer_workqueue_unfinished_work_seconds",
                   "Time the reconciles still running have run, summed", ["kind"])

RELISTS = Counter("overseer_informer_relists_total", "Full listings of a watched collection (start, expired "
                  "resourceVersion, failed watch)", ["resource"])
WATCH_ERRORS = Counter("overseer_informer_watch_errors_total", "Lists and watches that failed or were cut off",
                       ["resource"])


def instrumented(kind: str, reconcile: Callable[[Any], Awaitable[float | None]]
                 ) -> Callable[[Hashable], Awaitable[float | None]]:
    """Count a reconcile function's results (the work queue times them)."""
    ok, failed = RECONCILES.labels(kind, "ok"), RECONCILES.labels(kind, "error")

    async def run(key: Hashable) -> float | None:
        try:
            result = await reconcile(key)
        except Exception:
            failed.inc()
            raise
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
        GOAL_START_SECONDS.observe(max(0.0, time.time() - _epoch(created)))


GOAL_SECONDS = Histogram("overseer_goal_duration_seconds", "Time from a goal's creation to its end, by outcome "
                         "(Succeeded, Failed, Cancelled)", ["outcome"],
                         buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400))
QUEUE_WAIT_SECONDS = Histogram(
    "overseer_goal_queue_wait_seconds", "Time a goal waited for a free slot of its agent (phase Queued) before "
    "its pod was created; 0 for a goal that found one at once",
    buckets=(0, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200))
# Without labels, so each is a series from the start: rate() and alerts see 0, not nothing.
ATTEMPTS = Counter("overseer_goal_attempts_total", "Goal pods created (first attempts and retries)")
RETRIES = Counter("overseer_goal_retries_total", "Failed attempts followed by another one")
HEARTBEATS_LOST = Counter("overseer_goal_heartbeats_lost_total",
                          "Goal pods replaced because their agent stopped sending heartbeats")


def observe_end(goal: Raw, outcome: str) -> None:
    """A goal has just ended: how long it took from its creation."""
    created = goal["metadata"].get("creationTimestamp")
    if created:
        GOAL_SECONDS.labels(outcome).observe(max(0.0, time.time() - _epoch(created)))


class QueueWait:
    """When each goal started waiting for a slot (by uid), until its pod is created. Kept in
    memory: a new leader counts from its take-over."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def queued(self, uid: str) -> None:
        self._since.setdefault(uid, time.monotonic())

    def dispatched(self, uid: str) -> None:
        started = self._since.pop(uid, None)
        QUEUE_WAIT_SECONDS.observe(0.0 if started is None else time.monotonic() - started)

    def forget(self, uid: str) -> None:
        self._since.pop(uid, None)


def _epoch(stamp: str) -> float:
    return parse_time(stamp).timestamp()


class CacheCollector(Collector):
    """Gauges worked out from the operator's caches at scrape time, so they cannot drift from
    what the API server holds: goals by namespace, agent and phase; how long the longest-waiting
    goal of each waiting phase has gone undispatched; approvals waiting for a person and the age
    of the oldest, by namespace (0 in a namespace with goals and nothing waiting). Only the
    replica that reconciles reports them: a standby's caches are as full, and summing both would
    count every goal twice."""

    def __init__(self) -> None:
        self.goals: Callable[[], list[Raw]] = list  # the goals cache, once the operator runs
        self.leading: Callable[[], bool] = lambda: True

    def collect(self) -> Iterator[Metric]:
        if not self.leading():
            return iter(())
        by_phase: Counter_[tuple[str, str, str]] = Counter_()
        waiting: Counter_[str] = Counter_()
        oldest: dict[str, float] = {}
        undispatched: dict[tuple[str, str], float] = {}
        now = time.time()
        for raw in self.goals():
            ns = raw["metadata"].get("namespace") or ""
            status = raw.get("status") or {}
            phase = status.get("phase") or Phase.PENDING.value
            by_phase[(ns, status.get("agent") or "", phase)] += 1
            waiting[ns] += 0
            oldest.setdefault(ns, 0.0)
            if phase in WAITING:
                since = _undispatched_since(raw)
                if since:
                    undispatched[(ns, phase)] = max(undispatched.get((ns, phase), 0.0), now - _epoch(since))
            if phase != Phase.AWAITING_APPROVAL.value:
                continue
            for request in status.get("pendingApprovals") or []:
                if decision(raw, request.get("id", "")) is not None:
                    continue
                waiting[ns] += 1
                asked = request.get("requestedAt")
                if asked:
                    oldest[ns] = max(oldest[ns], now - _epoch(asked))
        goals = GaugeMetricFamily("overseer_goals", "Goals by namespace, agent (empty before one is assigned) "
                                  "and phase", labels=["namespace", "agent", "phase"])
        for (ns, agent, phase), n in sorted(by_phase.items()):
            goals.add_metric([ns, agent, phase], n)
        stuck = GaugeMetricFamily("overseer_goal_oldest_waiting_seconds",
                                  "How long the goal waiting longest in each phase (Pending, Blocked, Queued) has "
                                  "gone without a pod: since its creation or its last attempt's end",
                                  labels=["namespace", "phase"])
        for (ns, phase), seconds in sorted(undispatched.items()):
            stuck.add_metric([ns, phase], seconds)
        pending = GaugeMetricFamily("overseer_approvals_pending", "Approval requests waiting for a person's decision",
                                    labels=["namespace"])
        for ns, n in sorted(waiting.items()):
            pending.add_metric([ns], n)
        age = GaugeMetricFamily("overseer_approval_oldest_pending_age_seconds",
                                "How long the oldest approval request still waiting has waited", labels=["namespace"])
        for ns, seconds in sorted(oldest.items()):
            age.add_metric([ns], seconds)
        return iter([goals, stuck, pending, age])


WAITING = {Phase.PENDING.value, Phase.BLOCKED.value, Phase.QUEUED.value}


def _undispatched_since(goal: Raw) -> str | None:
    """When the goal last went without a pod: the Dispatched condition turning False, or its
    creation while it has none."""
    for c in (goal.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Dispatched" and c.get("status") == "False" and c.get("lastTransitionTime"):
            return str(c["lastTransitionTime"])
    created = goal["metadata"].get("creationTimestamp")
    return str(created) if created else None


CACHE = CacheCollector()
REGISTRY.register(CACHE)
