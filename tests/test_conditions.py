"""The conditions kstatus (Flux, cli-utils) reads, from a goal's phase and an object's readiness."""

from __future__ import annotations

import pytest

from overseer.operator.conditions import summarize, summarize_goal


def kinds(conds: list[dict]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conds}


@pytest.mark.parametrize("phase, reason, expected", [
    ("Pending", "AgentNotFound", {"Ready": ("False", "Pending"), "Reconciling": ("True", "Pending")}),
    ("Blocked", "Blocked", {"Ready": ("False", "Blocked"), "Reconciling": ("True", "Blocked")}),
    ("Queued", "QuotaExceeded", {"Ready": ("False", "Queued"), "Reconciling": ("True", "Queued")}),
    ("Running", "Dispatched", {"Ready": ("False", "Running"), "Reconciling": ("True", "Running")}),
    ("AwaitingApproval", "ApprovalRequested",
     {"Ready": ("False", "AwaitingApproval"), "Reconciling": ("True", "AwaitingApproval")}),
    ("Succeeded", "Succeeded", {"Ready": ("True", "Succeeded")}),
    ("Failed", "RetriesExhausted", {"Ready": ("False", "RetriesExhausted"), "Stalled": ("True", "RetriesExhausted")}),
    ("Cancelled", "ParentEnded", {"Ready": ("False", "ParentEnded"), "Stalled": ("True", "ParentEnded")}),
])
def test_a_goals_phase_decides_ready_reconciling_and_stalled(phase: str, reason: str, expected: dict) -> None:
    conds = summarize_goal([], phase, reason, "why", 3)
    assert kinds(conds) == expected
    assert all(c["observedGeneration"] == 3 for c in conds)
    messages = {c["type"]: c["message"] for c in conds}
    # Ready's message is the MESSAGE column: blank where there is nothing to act on.
    assert messages.pop("Ready") == ("" if phase in ("Running", "Succeeded") else "why")
    assert set(messages.values()) <= {"why"}


def test_a_finished_goal_drops_reconciling_and_keeps_its_other_conditions() -> None:
    running = summarize_goal([{"type": "Dispatched", "status": "True", "reason": "PodCreated", "message": "p",
                               "lastTransitionTime": "2026-01-01T00:00:00Z"}], "Running", "Dispatched", "m", 1)
    failed = summarize_goal(running, "Failed", "Timeout", "too slow", 1)
    assert kinds(failed) == {"Dispatched": ("True", "PodCreated"), "Ready": ("False", "Timeout"),
                             "Stalled": ("True", "Timeout")}


def test_the_same_phase_with_another_reason_changes_no_condition() -> None:
    """Dispatch writes Running with reason Dispatched, the pod watch with Running: one write, not two."""
    first = summarize_goal([], "Running", "Dispatched", "attempt 1 running in pod p", 1)
    assert summarize_goal(first, "Running", "Running", "attempt 1 running in pod p", 1) == first


def test_reconciling_keeps_its_transition_time_while_it_stays_true() -> None:
    first = summarize([], False, "SecretNotFound", "no secret", 1)
    again = summarize([{**c, "lastTransitionTime": "2026-01-01T00:00:00Z"} for c in first], False,
                      "CapabilityNotReady", "caps", 1)
    assert {c["type"]: c["lastTransitionTime"] for c in again}["Reconciling"] == "2026-01-01T00:00:00Z"


def test_a_spec_error_stalls_and_readiness_clears_both() -> None:
    stalled = summarize([], False, "InvalidInputSchema", "spec.inputSchema is not valid", 2, stalled=True)
    assert kinds(stalled) == {"Ready": ("False", "InvalidInputSchema"), "Stalled": ("True", "InvalidInputSchema")}
    assert kinds(summarize(stalled, True, "Valid", "ok", 3)) == {"Ready": ("True", "Valid")}


def test_a_message_quoting_a_megabyte_field_is_cut_to_a_status_that_fits() -> None:
    """A Capability whose inputSchema holds a megabyte string: the validator's message quotes it, and
    in Ready and Stalled it took the object past etcd's limit, so no status write ever went through."""
    from overseer.api import Capability
    from overseer.operator.capabilities import validate
    from overseer.operator.conditions import MESSAGE_MAX

    cap = Capability.model_validate({"metadata": {"name": "pytest", "namespace": "team-a"}, "spec": {
        "description": "Run the tests", "command": {"run": ["pytest"]},
        "inputSchema": {"type": "object", "properties": {"path": {"type": "x" * 1_000_000}}}}})
    ready, reason, message = validate(cap, exists=lambda n: True, requires_of=lambda n: [])
    assert (ready, reason) == (False, "InvalidInputSchema")
    conds = summarize([], ready, reason, message, 1, stalled=True)
    assert {c["type"] for c in conds} == {"Ready", "Stalled"}
    for c in conds:
        assert len(c["message"]) <= MESSAGE_MAX
        assert c["message"].startswith("spec.inputSchema is not a valid JSON Schema: 'xxx")
        assert c["message"].endswith(f"... ({len(message) - (MESSAGE_MAX - 40):,} characters left out)")
    assert summarize([], False, "Short", "a short message", 1)[0]["message"] == "a short message"
