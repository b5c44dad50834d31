"""Gauges the operator works out from its caches at scrape time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from overseer.operator.metrics import CacheCollector


def goal(name: str, phase: str | None, agent: str | None = "coder", ns: str = "team-a",
         annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    st = {**({"phase": phase} if phase else {}), **({"agent": agent} if agent else {}), **status}
    return {"metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}, "status": st}


def ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrape(goals: list[dict[str, Any]]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    collector = CacheCollector()
    collector.goals = lambda: goals
    registry = CollectorRegistry()
    registry.register(collector)
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_goals_are_counted_by_namespace_agent_and_phase() -> None:
    metrics = scrape([goal("a", "Running"), goal("b", "Running"), goal("c", "Queued"),
                      goal("d", "Succeeded", ns="team-b"), goal("new", None, agent=None)])
    assert metrics["overseer_goals"] == {
        (("agent", "coder"), ("namespace", "team-a"), ("phase", "Queued")): 1,
        (("agent", "coder"), ("namespace", "team-a"), ("phase", "Running")): 2,
        (("agent", "coder"), ("namespace", "team-b"), ("phase", "Succeeded")): 1,
        (("agent", ""), ("namespace", "team-a"), ("phase", "Pending")): 1,
    }


def test_approvals_waiting_and_the_oldest_ones_age_by_namespace() -> None:
    def request(rid: str, seconds: float) -> dict[str, str]:
        return {"id": rid, "kind": "toolCall", "summary": "deploy", "requestedAt": ago(seconds)}
    metrics = scrape([
        goal("ship", "AwaitingApproval", pendingApprovals=[request("r1", 600), request("r2", 30)]),
        # r3 is decided (the annotation is there) but the agent has not taken it back yet.
        goal("lint", "AwaitingApproval", annotations={"overseer.dev/approve": "r3"},
             pendingApprovals=[request("r3", 3600), request("r4", 60)]),
        goal("old", "Succeeded", pendingApprovals=[request("r5", 9000)]),
    ])
    assert metrics["overseer_approvals_pending"] == {(("namespace", "team-a"),): 3}
    (age,) = metrics["overseer_approval_oldest_pending_age_seconds"].values()
    assert 600 <= age < 660


def test_nothing_to_report_is_no_series() -> None:
    metrics = scrape([])
    assert metrics["overseer_goals"] == {} and metrics["overseer_approvals_pending"] == {}


def test_a_standby_replica_reports_no_cache_gauges() -> None:
    collector = CacheCollector()
    collector.goals = lambda: [goal("a", "Running")]
    collector.leading = lambda: False  # its caches are full, but the leader counts these goals
    registry = CollectorRegistry()
    registry.register(collector)
    assert not list(text_string_to_metric_families(generate_latest(registry).decode()))


def test_the_longest_undispatched_goal_of_each_waiting_phase() -> None:
    def undispatched(seconds: float) -> list[dict[str, str]]:
        return [{"type": "Dispatched", "status": "False", "reason": "WaitingForSlot",
                 "lastTransitionTime": ago(seconds)}]
    fresh = goal("fresh", None, agent=None)
    fresh["metadata"]["creationTimestamp"] = ago(30)
    metrics = scrape([goal("q1", "Queued", conditions=undispatched(900)),
                      goal("q2", "Queued", conditions=undispatched(60)),
                      goal("run", "Running", conditions=[{**undispatched(5000)[0], "status": "True"}]),
                      fresh])
    ages = metrics["overseer_goal_oldest_waiting_seconds"]
    assert set(ages) == {(("namespace", "team-a"), ("phase", "Queued")),
                         (("namespace", "team-a"), ("phase", "Pending"))}
    assert 900 <= ages[(("namespace", "team-a"), ("phase", "Queued"))] < 960
    assert 30 <= ages[(("namespace", "team-a"), ("phase", "Pending"))] < 90


def test_a_namespace_with_goals_and_no_approvals_reports_zero_waiting() -> None:
    metrics = scrape([goal("a", "Running", ns="team-b")])
    assert metrics["overseer_approvals_pending"] == {(("namespace", "team-b"),): 0}
    assert metrics["overseer_approval_oldest_pending_age_seconds"] == {(("namespace", "team-b"),): 0}


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_queue_wait_counts_from_the_first_queued_write_to_the_pod(monkeypatch: Any) -> None:
    from overseer.operator import metrics

    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    waits = metrics.QueueWait()
    count = sample("overseer_goal_queue_wait_seconds_count")
    total = sample("overseer_goal_queue_wait_seconds_sum")
    waits.queued("uid-1")
    clock[0] += 30
    waits.queued("uid-1")  # written Queued again (another look): still waiting since the first
    clock[0] += 15
    waits.dispatched("uid-1")
    waits.dispatched("uid-2")  # found a free slot at once
    waits.queued("uid-3")
    waits.forget("uid-3")  # deleted while queued: never observed
    waits.dispatched("uid-3")
    assert sample("overseer_goal_queue_wait_seconds_count") - count == 3
    assert sample("overseer_goal_queue_wait_seconds_sum") - total == 45


def test_a_goals_duration_is_observed_under_its_outcome() -> None:
    from overseer.operator import metrics

    count = sample("overseer_goal_duration_seconds_count", outcome="Failed")
    total = sample("overseer_goal_duration_seconds_sum", outcome="Failed")
    metrics.observe_end({"metadata": {"creationTimestamp": ago(120)}}, "Failed")
    assert sample("overseer_goal_duration_seconds_count", outcome="Failed") - count == 1
    assert 120 <= sample("overseer_goal_duration_seconds_sum", outcome="Failed") - total < 200
