"""The operator's /metrics while goals run, read as Prometheus reads it."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from e2e.harness import free_port, wait_for
from e2e.world import FAST, World



def scrape(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def test_metrics_follow_prometheus_conventions_and_count_goals_from_the_cache(
        namespace: str, kubectl: Any, crds: Any, operator: Any, exit_pod: Any) -> None:
    port = free_port()
    op = operator.start(namespace, "--metrics-port", str(port), env=FAST)
    world = World(namespace, kubectl, op, exit_pod)
    world.secret()
    world.agent("coder", max=1)
    world.goal("done")
    world.finish("done", 0)
    world.wait_phase("done", "Succeeded")
    world.goal("busy")
    world.running_pod("busy")
    world.goal("later")
    world.wait_phase("later", "Queued")
    url = f"http://127.0.0.1:{port}/metrics"

    def goals_by_phase() -> dict[str, float]:
        return {s.labels["phase"]: s.value for s in scrape(url)["overseer_goals"].samples
                if s.labels["namespace"] == namespace and s.labels["agent"] == "coder"}
    wait_for(lambda: goals_by_phase() == {"Succeeded": 1, "Running": 1, "Queued": 1},
             description=f"overseer_goals by phase (now {goals_by_phase()})")

    families = {name: f for name, f in scrape(url).items() if name.startswith("overseer_")}
    expected = {"overseer_goals": "gauge", "overseer_approvals_pending": "gauge",
                "overseer_approval_oldest_pending_age_seconds": "gauge",
                "overseer_goal_oldest_waiting_seconds": "gauge",
                "overseer_goal_start_latency_seconds": "histogram", "overseer_goal_duration_seconds": "histogram",
                "overseer_goal_queue_wait_seconds": "histogram", "overseer_goal_attempts": "counter",
                "overseer_goal_retries": "counter", "overseer_goal_heartbeats_lost": "counter",
                "overseer_reconcile": "counter", "overseer_leader": "gauge",
                "overseer_workqueue_adds": "counter", "overseer_workqueue_depth": "gauge",
                "overseer_workqueue_queue_duration_seconds": "histogram",
                "overseer_workqueue_work_duration_seconds": "histogram", "overseer_workqueue_retries": "counter",
                "overseer_workqueue_longest_running_processor_seconds": "gauge",
                "overseer_workqueue_unfinished_work_seconds": "gauge",
                "overseer_informer_relists": "counter", "overseer_informer_watch_errors": "counter"}
    assert {name: families[name].type for name in expected if name in families} == expected
    for name, family in families.items():
        assert re.fullmatch(r"overseer_[a-z0-9_]+", name), name
        assert family.documentation.strip(), f"{name} has no help text"
        labels = {label for s in family.samples for label in s.labels} - {"le"}
        assert not labels & {"goal", "name", "pod"}, f"{name} has unbounded labels {labels}"
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name
        else:
            assert not name.endswith("_total"), f"{name}: _total is for counters"
        if "duration" in name or "latency" in name or "age" in name:
            assert name.endswith("_seconds"), f"{name}: times in base units (seconds)"
    start = {s.name: s.value for s in families["overseer_goal_start_latency_seconds"].samples}
    assert start["overseer_goal_start_latency_seconds_count"] >= 2
