"""Dispatch decisions: dependency cycles and states, queue order, backoff, pod outcomes, selectors."""

from __future__ import annotations

from typing import Any

import pytest

from overseer.api.meta import LABEL_ATTEMPT
from overseer.operator.dispatch import (
    PodOutcome,
    attempt_of,
    backoff_seconds,
    check_dependencies,
    find_cycle,
    pod_outcome,
    selector_matches,
)
from overseer.api import queue_key


def graph(**edges: list[str]):
    return lambda node: edges.get(node, [])


def cycle_nodes(cycle: list[str] | None) -> set[str]:
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    return set(cycle)


def raw_goal(name: str, priority: int | None = None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {"description": "work"}
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


def pod(phase: str | None = None, *, exit_code: int | None = None, reason: str | None = None,
        container_reason: str | None = None, deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if reason is not None:
        status["reason"] = reason
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if container_reason:
            terminated["reason"] = container_reason
        status["containerStatuses"] = [{"name": "agent", "state": {"terminated": terminated}}]
    metadata: dict[str, Any] = {"name": "fix-ci-a1"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    return {"metadata": metadata, "status": status}


# --- cycles ----------------------------------------------------------------------------------------


def test_a_goal_depending_on_itself_is_a_cycle():
    assert find_cycle("a", graph(a=["a"])) == ["a", "a"]


def test_two_goals_depending_on_each_other_form_a_cycle():
    assert find_cycle("a", graph(a=["b"], b=["a"])) == ["a", "b", "a"]


def test_three_goals_in_a_ring_form_a_cycle():
    assert find_cycle("a", graph(a=["b"], b=["c"], c=["a"])) == ["a", "b", "c", "a"]


def test_the_cycle_is_found_behind_other_dependencies():
    cycle = find_cycle("a", graph(a=["x", "b"], x=["y"], b=["c"], c=["a"]))

    assert cycle == ["a", "b", "c", "a"]


def test_a_goal_that_depends_on_a_cycle_is_not_on_it():
    edges = graph(a=["b"], b=["c"], c=["b"])

    assert find_cycle("a", edges) is None
    assert cycle_nodes(find_cycle("b", edges)) == {"b", "c"}


def test_a_diamond_is_no_cycle():
    assert find_cycle("a", graph(a=["b", "c"], b=["d"], c=["d"], d=[])) is None


def test_a_goal_without_dependencies_is_no_cycle():
    assert find_cycle("a", graph()) is None


def test_dependencies_on_missing_goals_are_no_cycle():
    assert find_cycle("a", graph(a=["ghost"])) is None


# --- dependency states -------------------------------------------------------------------------------


def dependencies(depends_on: list[str], phases: dict[str, str], edges: dict[str, list[str]] | None = None):
    edges = edges or {}
    return check_dependencies("goal", depends_on, phases.get, lambda n: edges.get(n, []))


def test_goal_waits_for_a_dependency_that_does_not_exist_yet():
    deps = dependencies(["setup-repo"], {})

    assert deps.waiting == ["setup-repo"]
    assert deps.failed == [] and deps.cycle is None
    assert not deps.met


@pytest.mark.parametrize("phase", ["Pending", "Blocked", "Queued", "Running", "AwaitingApproval"])
def test_goal_waits_for_a_dependency_that_has_not_finished(phase):
    deps = dependencies(["setup-repo"], {"setup-repo": phase})

    assert deps.waiting == ["setup-repo"]
    assert not deps.met


@pytest.mark.parametrize("phase", ["Failed", "Cancelled"])
def test_goal_cannot_run_when_a_dependency_failed_or_was_cancelled(phase):
    deps = dependencies(["setup-repo", "lint"], {"setup-repo": phase, "lint": "Succeeded"})

    assert deps.failed == ["setup-repo"]
    assert deps.waiting == []
    assert not deps.met


def test_goal_is_ready_when_every_dependency_succeeded():
    deps = dependencies(["setup-repo", "lint"], {"setup-repo": "Succeeded", "lint": "Succeeded"})

    assert deps.met
    assert deps.waiting == [] and deps.failed == [] and deps.cycle is None


def test_goal_without_dependencies_is_ready():
    assert dependencies([], {}).met


def test_goal_on_a_dependency_cycle_is_told_the_cycle():
    deps = dependencies(["b"], {"b": "Pending"}, {"b": ["goal"]})

    assert deps.cycle == ["goal", "b", "goal"]
    assert not deps.met


# --- queue order ---------------------------------------------------------------------------------------


def test_queue_runs_higher_priority_first():
    goals = [raw_goal("low", -5), raw_goal("default"), raw_goal("high", 10)]

    assert [g["metadata"]["name"] for g in sorted(goals, key=queue_key)] == ["high", "default", "low"]


def test_queue_runs_the_oldest_first_among_equal_priorities():
    goals = [raw_goal("new", 1, "2026-01-03T00:00:00Z"), raw_goal("old", 1, "2026-01-01T00:00:00Z"),
             raw_goal("mid", 1, "2026-01-02T00:00:00Z")]

    assert [g["metadata"]["name"] for g in sorted(goals, key=queue_key)] == ["old", "mid", "new"]


def test_queue_breaks_remaining_ties_by_name():
    goals = [raw_goal("c"), raw_goal("a"), raw_goal("b")]

    assert [g["metadata"]["name"] for g in sorted(goals, key=queue_key)] == ["a", "b", "c"]


def test_priority_outweighs_age():
    goals = [raw_goal("old", 0, "2026-01-01T00:00:00Z"), raw_goal("urgent", 1, "2026-06-01T00:00:00Z")]

    assert [g["metadata"]["name"] for g in sorted(goals, key=queue_key)] == ["urgent", "old"]


# --- backoff ---------------------------------------------------------------------------------------------


def test_backoff_doubles_per_failed_attempt():
    assert [backoff_seconds(n, base=10, cap=1000) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_backoff_stops_at_the_cap():
    assert backoff_seconds(5, base=10, cap=100) == 100
    assert backoff_seconds(60, base=10, cap=300) == 300


def test_backoff_before_any_failure_is_the_base():
    assert backoff_seconds(0, base=10, cap=300) == 10


# --- pod outcomes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "Pending", "Running", "Unknown"])
def test_a_pod_that_has_not_finished_is_live(phase):
    assert pod_outcome(pod(phase)) == PodOutcome("live")


def test_a_pod_without_status_is_live():
    assert pod_outcome({"metadata": {"name": "fix-ci-a1"}}) == PodOutcome("live")


def test_a_succeeded_pod_succeeded_with_exit_code_zero():
    assert pod_outcome(pod("Succeeded", exit_code=0)) == PodOutcome("succeeded", 0)
    assert pod_outcome(pod("Succeeded")) == PodOutcome("succeeded", 0)


def test_a_failed_pod_reports_its_exit_code_and_reason():
    outcome = pod_outcome(pod("Failed", exit_code=3, container_reason="Error"))

    assert outcome == PodOutcome("failed", 3, "Error")


def test_a_failed_pod_prefers_the_pods_own_reason():
    outcome = pod_outcome(pod("Failed", exit_code=137, reason="DeadlineExceeded", container_reason="OOMKilled"))

    assert outcome == PodOutcome("failed", 137, "DeadlineExceeded")


def test_an_evicted_pod_failed_without_an_exit_code():
    assert pod_outcome(pod("Failed", reason="Evicted")) == PodOutcome("failed", None, "Evicted")


def test_a_failed_pod_without_any_reason_says_error():
    assert pod_outcome(pod("Failed", exit_code=1)) == PodOutcome("failed", 1, "Error")


@pytest.mark.parametrize("phase", ["Pending", "Running"])
def test_a_pod_being_deleted_before_it_finished_failed(phase):
    assert pod_outcome(pod(phase, deleting=True)) == PodOutcome("failed", None, "PodDeleted")


def test_a_pod_that_finished_before_being_deleted_keeps_its_outcome():
    assert pod_outcome(pod("Succeeded", exit_code=0, deleting=True)) == PodOutcome("succeeded", 0)


# --- attempts --------------------------------------------------------------------------------------------------


def test_attempt_of_reads_the_attempt_label():
    assert attempt_of({"metadata": {"labels": {LABEL_ATTEMPT: "3"}}}, LABEL_ATTEMPT) == 3


@pytest.mark.parametrize("labels", [{}, {LABEL_ATTEMPT: "three"}])
def test_attempt_of_a_pod_without_a_readable_attempt_is_zero(labels):
    assert attempt_of({"metadata": {"labels": labels}}, LABEL_ATTEMPT) == 0


# --- selectors -------------------------------------------------------------------------------------------------

LABELS = {"team": "a", "tier": "senior", "gpu": "none"}


def test_an_empty_selector_matches_everything():
    assert selector_matches({}, LABELS)
    assert selector_matches({}, {})


@pytest.mark.parametrize(("match_labels", "expected"), [
    ({"team": "a"}, True),
    ({"team": "a", "tier": "senior"}, True),
    ({"team": "b"}, False),
    ({"team": "a", "region": "eu"}, False),
])
def test_match_labels_must_all_be_present_with_their_values(match_labels, expected):
    assert selector_matches({"matchLabels": match_labels}, LABELS) is expected


@pytest.mark.parametrize(("operator", "key", "values", "expected"), [
    ("In", "tier", ["senior", "staff"], True),
    ("In", "tier", ["junior"], False),
    ("In", "region", ["eu"], False),
    ("NotIn", "tier", ["junior"], True),
    ("NotIn", "tier", ["senior"], False),
    ("NotIn", "region", ["eu"], True),
    ("Exists", "gpu", [], True),
    ("Exists", "region", [], False),
    ("DoesNotExist", "region", [], True),
    ("DoesNotExist", "gpu", [], False),
])
def test_match_expressions_follow_kubernetes_semantics(operator, key, values, expected):
    selector = {"matchExpressions": [{"key": key, "operator": operator, "values": values}]}

    assert selector_matches(selector, LABELS) is expected


def test_match_labels_and_expressions_must_all_hold():
    selector = {"matchLabels": {"team": "a"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["senior"]},
                                     {"key": "region", "operator": "DoesNotExist"}]}

    assert selector_matches(selector, LABELS)
    assert not selector_matches(selector, {**LABELS, "region": "eu"})
    assert not selector_matches(selector, {**LABELS, "team": "b"})
