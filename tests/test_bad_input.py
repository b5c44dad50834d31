"""Values the API server accepts (or once accepted) that must not wedge a reconcile or a goal pod."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from overseer.agent.tools import default_tools
from overseer.agent.tools.knowledge_search import SearchKnowledge
from overseer.agent.tools.selfmod import ProposeLesson, ProposeScriptTool
from overseer.agent.tools.subgoal import SpawnSubgoal
from overseer.api import parse_duration
from overseer.contract import BUILTIN_TOOLS
from overseer.kube import ApiError, parse_time
from overseer.operator.failures import REASON, REPEATS_BEFORE_EVENT, describe, reported


@pytest.mark.parametrize("text,expected", [
    ("2026-12-02T03:00:00Z", datetime(2026, 12, 2, 3, 0, 0, tzinfo=timezone.utc)),
    ("2026-12-02T03:00:00.123456Z", datetime(2026, 12, 2, 3, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-12-02T05:00:00+02:00", datetime(2026, 12, 2, 3, 0, 0, tzinfo=timezone.utc)),
    ("2026-12-01T22:30:00.5-04:30", datetime(2026, 12, 2, 3, 0, 0, 500000, tzinfo=timezone.utc)),
])
def test_status_timestamps_with_fractions_or_offsets_are_read(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected
    assert parse_time(text).tzinfo is not None  # comparable with the operator's own clock


@pytest.mark.parametrize("text", ["100000000h", "9000h", "8761h", "525601m"])
def test_durations_past_a_year_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_up_to_a_year_are_read() -> None:
    assert parse_duration("8760h") == timedelta(days=365)
    assert parse_duration("1h30m500ms") == timedelta(hours=1, minutes=30, milliseconds=500)
    assert datetime.now(timezone.utc) + parse_duration("8760h")  # no overflow in a deadline


def test_builtin_tool_names_are_the_agents_own() -> None:
    """The names Capabilities may not take (the CRD refuses them) are exactly those the agent gives
    its own tools: a capability of one of those names would make every goal pod fail at start."""
    names = {tool.name for tool in default_tools()}
    names |= {SearchKnowledge.name, SpawnSubgoal.name, ProposeLesson.name, ProposeScriptTool.name}
    assert names == BUILTIN_TOOLS


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def test_a_reconcile_failing_the_same_way_is_reported_once_on_its_object() -> None:
    recorder = Recorder()
    outcomes: list[Exception | None] = [OverflowError("date value out of range")] * 5 + [None]

    async def reconcile(key: str) -> float | None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return None

    run = reported(reconcile, lambda key: {"metadata": {"name": key}}, recorder)  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(5):
            with pytest.raises(OverflowError):  # still raised: the work queue backs off
                await run("g")
        assert await run("g") is None

    asyncio.run(main())
    assert len(recorder.events) == 1
    type_, reason, message = recorder.events[0]
    assert (type_, reason) == ("Warning", REASON)
    assert f"failed {REPEATS_BEFORE_EVENT} times" in message and "OverflowError: date value out of range" in message


def test_a_failure_that_clears_itself_is_not_reported() -> None:
    recorder = Recorder()
    outcomes: list[Exception | None] = [ConnectionError("reset"), None, ConnectionError("reset"), None]

    async def reconcile(key: str) -> float | None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return 1.0

    run = reported(reconcile, lambda key: {"metadata": {"name": key}}, recorder)  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await run("g")
            assert await run("g") == 1.0

    asyncio.run(main())
    assert recorder.events == []


@pytest.mark.parametrize("reason,message", [
    ("CreateContainerConfigError", 'secret "anthropic" not found'),
    ("CreateContainerConfigError", 'couldn\'t find key api-key in Secret team-a/anthropic'),
    ("InvalidImageName", 'Failed to apply default image tag "ghcr.io/org/agent 1.2": invalid reference format'),
])
def test_a_pod_that_can_never_start_fails_its_attempt_naming_why(reason: str, message: str) -> None:
    """A missing or malformed Secret, or an image reference the kubelet cannot parse, leaves the pod
    Pending for ever: the goal would stay Running. The attempt fails with the kubelet's reason."""
    from overseer.operator.dispatch import pod_outcome

    pod = {"metadata": {"name": "fix-ci-a1"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "agent", "state": {"waiting": {"reason": reason, "message": message}}}]}}
    outcome = pod_outcome(pod)
    assert outcome.state == "failed" and outcome.reason == f"{reason}: {message}"


def test_a_pod_pulling_its_image_is_still_live() -> None:
    from overseer.operator.dispatch import pod_outcome

    pod = {"metadata": {"name": "fix-ci-a1"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "agent", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert pod_outcome(pod).state == "live"


def test_a_cycle_of_500_goals_is_found_and_described_in_a_line() -> None:
    from overseer.operator.dispatch import describe_cycle, find_cycle

    names = [f"g{i}" for i in range(500)]
    edges = {n: [names[(i + 1) % 500]] for i, n in enumerate(names)}
    cycle = find_cycle("g0", lambda n: edges[n])
    assert cycle is not None and len(cycle) == 501
    text = describe_cycle(cycle)
    assert text.startswith("g0 -> g1 ->") and text.endswith("g499 -> g0") and "(485 more)" in text
    assert len(text) < 200


def _chain(n: int) -> dict[str, dict[str, Any]]:
    """Goals c0 (top level) <- c1 <- ... <- c(n-1), each the parent of the next."""
    return {f"c{i}": {"metadata": {"name": f"c{i}", "namespace": "team-a"},
                      "spec": {"parent": f"c{i - 1}"} if i else {}} for i in range(n)}


def test_a_100_deep_sub_goal_chain_stops_at_the_deepest_level_the_operator_runs() -> None:
    from overseer.operator import subgoals

    goals = _chain(100)
    assert subgoals.depth(goals["c1"], goals.get) == 1
    assert subgoals.depth(goals["c10"], goals.get) == subgoals.MAX_DEPTH
    assert subgoals.depth(goals["c99"], goals.get) == subgoals.MAX_DEPTH + 1  # counting stops there
    refused = subgoals.refusal(goals["c11"], goals["c10"], lambda a: None, [], lambda g: "Running",
                               subgoals.depth(goals["c11"], goals.get))
    assert refused is not None and refused.reason == "TooDeep" and "more than 10 sub-goals" in refused.message
    allowed = subgoals.refusal(goals["c10"], goals["c9"], lambda a: None, [], lambda g: "Running",
                               subgoals.depth(goals["c10"], goals.get))
    assert allowed is None


def test_a_loop_of_parents_ends_the_depth_count() -> None:
    from overseer.operator import subgoals

    goals = {"a": {"metadata": {"name": "a"}, "spec": {"parent": "b"}},
             "b": {"metadata": {"name": "b"}, "spec": {"parent": "a"}}}
    assert subgoals.depth(goals["a"], goals.get) == 2


def failing_write(message: str, status: int = 403) -> ApiError:
    return ApiError(status, "Forbidden", message, "PATCH",
                    "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/overseer-agent-coder"
                    "?fieldManager=overseer-operator&force=true")


AGENT_RAW = {"kind": "Agent", "metadata": {"name": "coder", "namespace": "team-a"}}


@pytest.mark.parametrize("message,fix", [
    ('networkpolicies.networking.k8s.io "overseer-agent-coder" is forbidden: exceeded quota: team-limits, requested: '
     'count/networkpolicies.networking.k8s.io=1, used: count/networkpolicies.networking.k8s.io=1, limited: '
     'count/networkpolicies.networking.k8s.io=1',
     "raise or remove ResourceQuota team-limits in namespace team-a"),
    ("networkpolicies.networking.k8s.io \"overseer-agent-coder\" is forbidden: ValidatingAdmissionPolicy "
     "'no-egress' with binding 'no-egress-team-a' denied request: egress is not allowed",
     "change ValidatingAdmissionPolicy no-egress (binding no-egress-team-a)"),
    ('admission webhook "policy.example.com" denied the request: nope',
     "change admission webhook policy.example.com"),
    ('networkpolicies.networking.k8s.io "overseer-agent-coder" is forbidden: User '
     '"system:serviceaccount:overseer-system:overseer" cannot patch resource "networkpolicies"',
     "grant the operator's ServiceAccount (User \"system:serviceaccount:overseer-system:overseer\")"),
])
def test_a_refused_write_is_described_with_its_object_and_the_fix(message: str, fix: str) -> None:
    text = describe(failing_write(message), AGENT_RAW)
    assert text.startswith("the API server refused to write networkpolicies/overseer-agent-coder (403 Forbidden): ")
    assert message in text and f"to fix it, {fix}" in text


def test_a_refusal_with_no_known_fix_carries_the_servers_words() -> None:
    text = describe(failing_write('spec.egress[0].to[0].ipBlock.cidr: Invalid value: "x"', 422), AGENT_RAW)
    assert "ipBlock.cidr: Invalid value" in text and "to fix it" not in text
    assert describe(OverflowError("date value out of range"), AGENT_RAW) == "OverflowError: date value out of range"


def test_the_event_names_the_object_and_what_failed() -> None:
    recorder = Recorder()

    async def reconcile(key: str) -> float | None:
        raise failing_write("forbidden: exceeded quota: team-limits, requested: count/networkpolicies=1")

    run = reported(reconcile, lambda key: AGENT_RAW, recorder)  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(REPEATS_BEFORE_EVENT):
            with pytest.raises(ApiError):
                await run("coder")

    asyncio.run(main())
    [(type_, reason, message)] = recorder.events
    assert message.startswith("Agent team-a/coder: reconcile failed 3 times in a row")
    assert "networkpolicies/overseer-agent-coder" in message and "ResourceQuota team-limits" in message
