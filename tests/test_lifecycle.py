"""The Goal lifecycle, transition by transition, as a pure function: a goal, its pods, its Agent,
its dependencies and parent and the time in; the next status and what to do out. Every row of
the README's phase table, and the ways out of Running (retries, backoff, timeout, cancel, quota,
heartbeat loss, a lost pod, a parent that ended, a budget spent), without an API server."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from overseer.api import Phase
from overseer.operator import lifecycle
from overseer.operator.lifecycle import Decision, Dispatch
from overseer.operator.settings import Settings

NS = "team"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = Settings(retry_backoff_seconds=10, retry_backoff_max_seconds=300, heartbeat_timeout_seconds=300)
Raw = dict[str, Any]
README = Path(__file__).resolve().parent.parent / "README.md"


def at(seconds_ago: float) -> str:
    return lifecycle.iso(NOW - timedelta(seconds=seconds_ago))


def operator_wrote(*fields: str) -> dict[str, Any]:
    return {"manager": "overseer-operator", "operation": "Update", "subresource": "status",
            "fieldsV1": {"f:status": {f"f:{f}": {} for f in fields}}}


def goal(name: str = "fix-ci", phase: str | None = None, spec: dict[str, Any] | None = None,
         annotations: dict[str, str] | None = None, created: float = 600, **status: Any) -> Raw:
    meta: dict[str, Any] = {"namespace": NS, "name": name, "uid": f"uid-{name}", "resourceVersion": "7",
                            "generation": 1, "creationTimestamp": at(created),
                            "managedFields": [operator_wrote("phase")] if phase else []}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "metadata": meta,
            "spec": {"description": "make CI green", "agentRef": {"name": "coder"}, "maxRetries": 2, **(spec or {})},
            "status": {**({"phase": phase} if phase else {}), **status}}


def pod(attempt: int = 1, phase: str = "Running", exit_code: int | None = None, goal_name: str = "fix-ci",
        created: float = 10, waiting: str | None = None, deleting: bool = False,
        started: float | None = None) -> Raw:
    """A goal pod; `started`: seconds since its agent container started running (default: at creation
    when the pod is Running, never when it is Pending)."""
    status: dict[str, Any] = {"phase": phase}
    if started is None and phase == "Running":
        started = created
    if started is not None:
        status["containerStatuses"] = [{"name": "tools", "state": {"running": {"startedAt": at(created)}}},
                                       {"name": "agent", "state": {"running": {"startedAt": at(started)}}}]
    if exit_code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"exitCode": exit_code}}}]
    if waiting is not None:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": waiting, "message": 'secret "key" not found'}}}]
    meta: dict[str, Any] = {"namespace": NS, "name": f"{goal_name}-a{attempt}", "creationTimestamp": at(created),
                            "labels": {"overseer.dev/goal": goal_name, "overseer.dev/agent": "coder",
                                       "overseer.dev/attempt": str(attempt)}}
    if deleting:
        meta["deletionTimestamp"] = at(1)
    return {"metadata": meta, "status": status}


def agent(name: str = "coder", ready: bool = True, slots: int = 1, labels: dict[str, str] | None = None,
          **spec: Any) -> Raw:
    return {"apiVersion": "overseer.dev/v1alpha1", "kind": "Agent",
            "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"model": {"name": "m", "apiKeySecretRef": {"name": "s", "key": "k"}},
                     "maxConcurrentGoals": slots, **spec},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "reason": "Ready" if ready else "SecretMissing",
                                       "message": "" if ready else "Secret s has no key k",
                                       "lastTransitionTime": at(3600)}]}}


@dataclass
class World:
    """The caches as lifecycle.Cluster reads them."""

    goals: list[Raw] = field(default_factory=list)
    agents_: list[Raw] = field(default_factory=lambda: [agent()])
    live: dict[str, int] = field(default_factory=dict)
    flight: dict[str, set[str]] = field(default_factory=dict)
    claims: dict[str, Raw] = field(default_factory=dict)
    pods_: dict[str, list[Raw]] = field(default_factory=dict)  # by goal

    def goal(self, name: str) -> Raw | None:
        return next((g for g in self.goals if g["metadata"]["name"] == name), None)

    def agent(self, name: str) -> Raw | None:
        return next((a for a in self.agents_ if a["metadata"]["name"] == name), None)

    def agents(self) -> list[Raw]:
        return self.agents_

    def live_pods(self, agent: str) -> int:
        return self.live.get(agent, 0)

    def in_flight(self, agent: str) -> set[str]:
        return self.flight.get(agent, set())

    def queued(self, agent: str) -> list[Raw]:
        return [g for g in self.goals if g["status"].get("agent") == agent and g["status"].get("phase") == "Queued"]

    def subgoals(self, parent: str) -> list[Raw]:
        return [g for g in self.goals if g["spec"].get("parent") == parent]

    def pods(self, goal: str) -> list[Raw]:
        return self.pods_.get(goal, [])

    def claim(self, name: str) -> Raw | None:
        return self.claims.get(name)


def decide(g: Raw, pods: list[Raw] | None = None, world: World | None = None, now: datetime = NOW,
           settings: Settings = SETTINGS) -> Decision:
    from overseer.operator import trust
    return lifecycle.decide(g, trust.trusted_phase(g), pods or [], world or World(), now, settings)


def summary(d: Decision) -> tuple[Any, ...]:
    """(phase, reason, pods deleted, event reasons, requeue, attempt dispatched): what a row checks."""
    return (d.status.phase.value if d.status else None, d.status.reason if d.status else None, d.delete,
            tuple(e.reason for e in d.events), d.requeue, d.dispatch.attempt if d.dispatch else None)


def failed(reason: str, delete: tuple[str, ...] = ()) -> tuple[Any, ...]:
    return ("Failed", reason, delete, (), None, None)


BY_CODER = {"overseer.dev/created-by": f"system:serviceaccount:{NS}:overseer-agent-coder"}


def spawned(**spec: Any) -> Raw:
    """A sub-goal of "lead" as the agent coder's pod creates it (the API server stamps the creator)."""
    return goal(spec={"parent": "lead", "budget": {"maxTokensPerGoal": 1000}, **spec}, annotations=BY_CODER, created=5)


def lead_pod(agent_name: str = "coder", owner: str = "uid-lead", phase: str = "Running") -> Raw:
    """The pod the operator created for the parent "lead" (owned by it), maybe never recorded in its status."""
    p = pod(goal_name="lead", created=20, phase=phase, exit_code={"Succeeded": 0, "Failed": 1}.get(phase))
    p["metadata"]["labels"]["overseer.dev/agent"] = agent_name
    p["metadata"]["ownerReferences"] = [{"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "lead",
                                         "uid": owner, "controller": True}]
    return p


def dispatched_at(seconds_ago: float) -> Raw:
    """The condition the operator writes when the goal takes its current pod."""
    return {"type": "Dispatched", "status": "True", "reason": "PodCreated", "message": "fix-ci-a1",
            "lastTransitionTime": at(seconds_ago)}


REQUEST = {"id": "a-1", "kind": "toolCall", "summary": "kubectl delete ns prod", "requestedAt": at(30)}
DISPATCH_FIRST = (None, None, (), (), None, 1)
ANOTHER = goal("other", phase="Running", spec={}, agent="coder")

# (id, goal, pods, world, expected summary)
TRANSITIONS: list[tuple[str, Raw, list[Raw], World, tuple[Any, ...]]] = [
    # Pending
    ("new goal, Ready agent: first attempt", goal(), [], World(), DISPATCH_FIRST),
    ("agentRef names no Agent", goal(spec={"agentRef": {"name": "ghost"}}), [], World(),
     ("Pending", "AgentNotFound", (), (), None, None)),
    ("agentSelector matches no Agent", goal(spec={"agentRef": None, "agentSelector": {"matchLabels": {"role": "x"}}}),
     [], World(), ("Pending", "AgentNotFound", (), (), None, None)),
    ("Agent not Ready", goal(), [], World(agents_=[agent(ready=False)]), ("Pending", "AgentNotReady", (), (), None, None)),
    # Blocked, and the ways out of it
    ("dependency still running", goal(spec={"dependsOn": ["build"]}), [], World(goals=[goal("build", phase="Running")]),
     ("Blocked", "Blocked", (), (), None, None)),
    ("dependency not created yet", goal(spec={"dependsOn": ["build"]}), [], World(),
     ("Blocked", "Blocked", (), (), None, None)),
    ("dependency marked Succeeded by another writer", goal(spec={"dependsOn": ["build"]}), [],
     World(goals=[{**goal("build"), "status": {"phase": "Succeeded"},
                   "metadata": {**goal("build")["metadata"], "managedFields": [
                       {**operator_wrote("phase"), "manager": "overseer-agent"}]}}]),
     ("Blocked", "Blocked", (), (), None, None)),
    ("dependency succeeded", goal(spec={"dependsOn": ["build"]}), [], World(goals=[goal("build", phase="Succeeded")]),
     DISPATCH_FIRST),
    ("dependency failed", goal(spec={"dependsOn": ["build", "lint"]}), [],
     World(goals=[goal("build", phase="Failed"), goal("lint", phase="Succeeded")]), failed("DependencyFailed")),
    ("dependency cancelled", goal(spec={"dependsOn": ["build"]}), [], World(goals=[goal("build", phase="Cancelled")]),
     failed("DependencyFailed")),
    ("dependsOn cycle", goal(spec={"dependsOn": ["build"]}), [],
     World(goals=[goal("build", phase="Blocked", spec={"dependsOn": ["fix-ci"]})]), failed("DependencyCycle")),
    # Queued: a retry's backoff
    ("attempt failed, retries left: backoff", goal(phase="Running", attempt=1, pod="fix-ci-a1", startedAt=at(60)),
     [pod(phase="Failed", exit_code=1)], World(), ("Queued", "AttemptFailed", (), (), 10.5, None)),
    ("second attempt failed: backoff doubles", goal(phase="Running", attempt=2, pod="fix-ci-a2", startedAt=at(60)),
     [pod(phase="Failed", exit_code=1), pod(2, phase="Failed", exit_code=1)], World(),
     ("Queued", "AttemptFailed", (), (), 20.5, None)),
    ("waiting out the backoff", goal(phase="Queued", attempt=1, retryAt=lifecycle.iso(NOW + timedelta(seconds=7))),
     [pod(phase="Failed", exit_code=1)], World(), (None, None, (), (), 7.5, None)),
    ("backoff over: the next attempt", goal(phase="Queued", attempt=1, retryAt=at(1)),
     [pod(phase="Failed", exit_code=1)], World(), (None, None, (), (), None, 2)),
    ("pod gone while Running: lost, retried", goal(phase="Running", attempt=1, pod="fix-ci-a1"), [], World(),
     ("Queued", "AttemptFailed", (), (), 10.5, None)),
    ("pod created, not seen by the watch yet: not lost", goal(phase="Running", attempt=1, pod="fix-ci-a1", agent="coder"),
     [],
     World(flight={"coder": {"fix-ci-a1"}}), (None, None, (), (), None, 2)),
    ("pod can never start: deleted, attempt failed",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Pending", waiting="CreateContainerConfigError")],
     World(), ("Queued", "AttemptFailed", ("fix-ci-a1",), (), 10.5, None)),
    ("pod that can never start, already deleting: not deleted again",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"),
     [pod(phase="Pending", waiting="CreateContainerConfigError", deleting=True)], World(),
     ("Queued", "AttemptFailed", (), (), 10.5, None)),
    # Running, and AwaitingApproval
    ("live pod", goal(phase="Running", attempt=1, pod="fix-ci-a1", agent="coder"), [pod()], World(),
     ("Running", "Running", (), (), 300, None)),
    ("pod created just before a crash: adopted", goal(), [pod()], World(), ("Running", "Running", (), (), 300, None)),
    ("approval pending", goal(phase="Running", attempt=1, pod="fix-ci-a1",
                              pendingApprovals=[REQUEST]), [pod()], World(),
     ("AwaitingApproval", "ApprovalRequested", (), (), None, None)),
    ("approval decided", goal(phase="AwaitingApproval", attempt=1, pod="fix-ci-a1",
                              annotations={"overseer.dev/approve": "a-1"},
                              pendingApprovals=[REQUEST]), [pod()], World(),
     ("Running", "Running", (), (), 300, None)),
    # heartbeat loss
    ("no heartbeat for longer than the timeout: pod replaced",
     goal(phase="Running", attempt=1, pod="fix-ci-a1", heartbeat=at(301)), [pod(created=900)], World(),
     (None, None, ("fix-ci-a1",), ("HeartbeatLost",), 1.0, None)),
    ("pod never reported: its agent's start counts as the last beat",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(created=400)], World(),
     (None, None, ("fix-ci-a1",), ("HeartbeatLost",), 1.0, None)),
    ("pod waited for the scheduler longer than the timeout: its agent has not started, nothing hung",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Pending", created=900)], World(),
     ("Running", "Running", (), (), 300, None)),
    ("agent started recently after a long wait for the scheduler: not replaced",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(created=900, started=30)], World(),
     ("Running", "Running", (), (), 300, None)),
    ("agent started long ago, silent since: replaced",
     goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(created=900, started=301)], World(),
     (None, None, ("fix-ci-a1",), ("HeartbeatLost",), 1.0, None)),
    ("warm pod's agent idled long before the claim: counted from the claim",
     goal(phase="Running", attempt=1, pod="fix-ci-a1", conditions=[dispatched_at(20)]),
     [pod(created=3600, started=3600)], World(),
     ("Running", "Running", (), (), 300, None)),
    ("recent heartbeat", goal(phase="Running", attempt=1, pod="fix-ci-a1", heartbeat=at(5)), [pod(created=900)], World(),
     ("Running", "Running", (), (), 300, None)),
    ("waiting for a person beats no heartbeat",
     goal(phase="AwaitingApproval", attempt=1, pod="fix-ci-a1", heartbeat=at(3600),
          pendingApprovals=[REQUEST]), [pod(created=3600)], World(),
     ("AwaitingApproval", "ApprovalRequested", (), (), None, None)),
    # Succeeded
    ("pod exited 0", goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Succeeded", exit_code=0)], World(),
     ("Succeeded", "Succeeded", (), (), None, None)),
    # Failed
    ("last retry failed", goal(phase="Running", attempt=3, pod="fix-ci-a3"),
     [pod(1, "Failed", 1), pod(2, "Failed", 1), pod(3, "Failed", 1)], World(), failed("RetriesExhausted")),
    ("agent gave up: not retried", goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Failed", exit_code=2)],
     World(), failed("AgentGaveUp")),
    ("budget exhausted: not retried", goal(phase="Running", attempt=1, pod="fix-ci-a1", failureReason="BudgetExhausted",
                                           result="spent 100000 tokens of 100000"),
     [pod(phase="Failed", exit_code=2)], World(), failed("BudgetExhausted")),
    ("workspace full: not retried", goal(phase="Running", attempt=1, pod="fix-ci-a1", failureReason="WorkspaceFull",
                                         result="the workspace /workspace is full (0 bytes free of 2097152)"),
     [pod(phase="Failed", exit_code=2)], World(), failed("WorkspaceFull")),
    ("agent's failureReason is no reason: AgentGaveUp",
     goal(phase="Running", attempt=1, pod="fix-ci-a1", failureReason="rm -rf /; echo"),
     [pod(phase="Failed", exit_code=2)], World(), failed("AgentGaveUp")),
    ("failed goal set back to Pending: no new attempt", goal(phase="Pending", attempt=1),
     [pod(phase="Failed", exit_code=2)], World(), failed("AgentGaveUp")),
    ("spec.timeout passed: live pod deleted", goal(phase="Running", attempt=1, pod="fix-ci-a1", startedAt=at(601),
                                                spec={"timeout": "10m"}), [pod()], World(),
     failed("Timeout", ("fix-ci-a1",))),
    ("spec.timeout passed while queued", goal(phase="Queued", attempt=1, startedAt=at(3600), spec={"timeout": "1h"},
                                              retryAt=at(-60)), [pod(phase="Failed", exit_code=1)], World(),
     failed("Timeout")),
    ("invalid spec", goal(spec={"maxRetries": 99}), [], World(), failed("InvalidSpec")),
    ("sub-goal of a goal that does not exist", goal(spec={"parent": "lead"}), [], World(), failed("ParentNotFound")),
    ("sub-goal asking more than its parent's budget", goal(spec={"parent": "lead", "budget": {"maxTokensPerGoal": 9000}}),
     [], World(goals=[goal("lead", phase="Running", spec={"budget": {"maxTokensPerGoal": 5000}}, agent="coder")]),
     failed("BudgetAboveParent")),
    ("sub-goal within its parent's budget", goal(spec={"parent": "lead", "budget": {"maxTokensPerGoal": 5000}}),
     [], World(goals=[goal("lead", phase="Running", spec={"budget": {"maxTokensPerGoal": 5000}}, agent="coder")]),
     DISPATCH_FIRST),
    # The operator killed between creating the parent's pod and writing the parent Running: the
    # parent's agent already creates sub-goals, which wait for the pod to be recorded.
    ("sub-goal of a parent whose pod is not recorded yet: waits", spawned(), [],
     World(goals=[goal("lead")], pods_={"lead": [lead_pod()]}), ("Pending", "ParentStarting", (), (), 2.0, None)),
    ("sub-goal of a retried parent whose new pod is not recorded yet: waits", spawned(), [],
     World(goals=[goal("lead", phase="Queued", attempt=1, agent="coder")],
           pods_={"lead": [lead_pod(phase="Failed"), {**lead_pod(), "metadata": {
               **lead_pod()["metadata"], "name": "lead-a2",
               "labels": {**lead_pod()["metadata"]["labels"], "overseer.dev/attempt": "2"}}}]}),
     ("Pending", "ParentStarting", (), (), 2.0, None)),
    ("sub-goal once its parent's pod is recorded: runs", spawned(), [],
     World(goals=[goal("lead", phase="Running", attempt=1, pod="lead-a1", agent="coder")],
           pods_={"lead": [lead_pod()]}), DISPATCH_FIRST),
    ("sub-goal of a parent whose unrecorded pod works for another agent: refused", spawned(), [],
     World(goals=[goal("lead")], pods_={"lead": [lead_pod(agent_name="admin")]}), failed("NotOwnGoal")),
    ("sub-goal of a parent with a pod it does not own: refused", spawned(), [],
     World(goals=[goal("lead")], pods_={"lead": [lead_pod(owner="uid-old-lead")]}), failed("NotOwnGoal")),
    ("sub-goal of a queued parent whose pod has ended: refused", spawned(), [],
     World(goals=[goal("lead", phase="Queued", attempt=1, agent="coder")], pods_={"lead": [lead_pod(phase="Failed")]}),
     failed("ParentNotRunning")),
    ("workspaceFrom a goal without a claim",
     goal(spec={"dependsOn": ["build"], "workspaceFrom": {"goal": "build"}}), [],
     World(goals=[goal("build", phase="Succeeded")]), failed("SourceClaimMissing")),
    # Cancelled
    ("spec.cancel: live pod deleted", goal(phase="Running", attempt=1, pod="fix-ci-a1", spec={"cancel": True}), [pod()],
     World(), ("Cancelled", "Cancelled", ("fix-ci-a1",), (), None, None)),
    ("spec.cancel while queued", goal(phase="Queued", spec={"cancel": True}), [], World(),
     ("Cancelled", "Cancelled", (), (), None, None)),
    ("parent failed: sub-goal stopped", goal(phase="Running", attempt=1, pod="fix-ci-a1", spec={"parent": "lead"}),
     [pod()], World(goals=[goal("lead", phase="Failed")]), ("Cancelled", "ParentEnded", ("fix-ci-a1",), (), None, None)),
    ("parent cancelled: sub-goal stopped before it ran", goal(spec={"parent": "lead"}), [],
     World(goals=[goal("lead", phase="Cancelled")]), ("Cancelled", "ParentEnded", (), (), None, None)),
    ("parent succeeded: the sub-goal's result is still read", goal(phase="Running", attempt=1, pod="fix-ci-a1",
                                                                   spec={"parent": "lead"}), [pod()],
     World(goals=[goal("lead", phase="Succeeded")]), ("Running", "Running", (), (), 300, None)),
    # ended goals stay ended
    ("Succeeded is final: a pod left live is deleted", goal(phase="Succeeded", attempt=1), [pod()], World(),
     (None, None, ("fix-ci-a1",), (), None, None)),
    ("Failed is final even with spec.cancel", goal(phase="Failed", spec={"cancel": True}), [], World(),
     (None, None, (), (), None, None)),
    ("Failed with an invalid spec stays as it is", goal(phase="Failed", spec={"maxRetries": 99}), [], World(),
     (None, None, (), (), None, None)),
    # a phase another writer put in status is worked out again
    ("Succeeded forged by another writer: still Running",
     {**goal(phase="Succeeded", attempt=1, pod="fix-ci-a1"),
      "metadata": {**goal()["metadata"], "managedFields": [{**operator_wrote("phase"), "manager": "kubectl-patch"}]}},
     [pod()], World(), ("Running", "Running", (), ("PhaseIgnored",), 300, None)),
]


@pytest.mark.parametrize("g, pods, world, expected", [row[1:] for row in TRANSITIONS], ids=[row[0] for row in TRANSITIONS])
def test_transition(g: Raw, pods: list[Raw], world: World, expected: tuple[Any, ...]) -> None:
    assert summary(decide(g, pods, world)) == expected


def readme_phase_table() -> set[tuple[str, str]]:
    """(phase, reason) of every row of the README's phase table."""
    text = README.read_text()
    table = text[text.index("| phase | means | reasons"):].split("\n\n")[0].splitlines()[2:]
    return {(row.split("|")[1].strip(), reason) for row in table for reason in re.findall(r"`(\w+)`", row.split("|")[3])}



def reached(decisions: list[Decision]) -> set[tuple[str, str]]:
    """(phase, reason) of each transition, with the reason of each condition it sets."""
    return {(d.status.phase.value, reason) for d in decisions if d.status
            for reason in (d.status.reason, *(c[2] for c in d.status.conditions))}


def test_every_phase_and_reason_of_the_readme_table_has_a_row() -> None:
    decisions = [decide(g, pods, world) for _, g, pods, world, _ in TRANSITIONS]
    # An attempt that starts ends Queued for want of a slot, Queued by the quota, or Running.
    decisions += [step for d in decisions if d.dispatch for step in (
        lifecycle.waiting_for_slot(d.dispatch), lifecycle.quota_exceeded(d.dispatch, "p", "exceeded quota", SETTINGS),
        lifecycle.dispatched(goal(), d.dispatch, "p", NOW, SETTINGS))]
    table = readme_phase_table()
    assert {phase for phase, _ in table} == {p.value for p in Phase}
    assert table <= reached(decisions), "README.md's phase table names a transition no row of TRANSITIONS reaches"


# ---- what a transition writes ---------------------------------------------------------------------


def conditions(d: Decision) -> dict[str, tuple[bool, str]]:
    assert d.status is not None
    return {t: (s, r) for t, s, r, _ in d.status.conditions}


def test_a_retry_waits_out_its_backoff_in_status_so_a_restarted_operator_keeps_it() -> None:
    d = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Failed", exit_code=1)])
    assert d.status is not None and d.status.warning
    assert d.status.fields == {"attempt": 1, "pod": "fix-ci-a1", "lastExitCode": 1,
                               "retryAt": "2026-12-01T12:00:10Z", "startedAt": "2026-12-01T12:00:00Z"}
    assert conditions(d) == {"Dispatched": (False, "RetryBackoff")}
    assert d.status.message == "attempt 1 failed (pod fix-ci-a1 exited with code 1); retrying at 2026-12-01T12:00:10Z"


def test_the_backoff_stops_growing_at_its_cap() -> None:
    capped = Settings(retry_backoff_seconds=10, retry_backoff_max_seconds=15, heartbeat_timeout_seconds=0)
    d = decide(goal(phase="Running", attempt=2, pod="fix-ci-a2", spec={"maxRetries": 5}),
               [pod(phase="Failed", exit_code=1), pod(2, phase="Failed", exit_code=1)], settings=capped)
    assert d.requeue == 15.5


def test_a_lost_pod_is_named_in_the_failure() -> None:
    d = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1"))
    assert d.status is not None and "pod fix-ci-a1 PodLost" in d.status.message


def test_an_ended_goal_records_when_and_why() -> None:
    d = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1", startedAt=at(60)), [pod(phase="Succeeded", exit_code=0)])
    assert d.status is not None and not d.status.warning
    assert d.status.fields == {"agent": "coder", "pod": "fix-ci-a1", "attempt": 1, "lastExitCode": 0,
                               "startedAt": at(60), "completedAt": "2026-12-01T12:00:00Z"}
    assert conditions(d) == {"Complete": (True, "Succeeded")}
    gave_up = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1", failureReason="BudgetExhausted",
                          result="spent 100000 tokens of 100000"), [pod(phase="Failed", exit_code=2)])
    assert gave_up.status is not None and gave_up.status.warning
    assert gave_up.status.message == ("attempt 1: spent 100000 tokens of 100000 (pod fix-ci-a1 exited with code 2); "
                                      "not retried")
    assert conditions(gave_up) == {"Complete": (False, "BudgetExhausted")}


def test_an_invalid_spec_names_the_field() -> None:
    d = decide(goal(spec={"maxRetries": 99}))
    assert d.status is not None and d.status.message.startswith("Goal team/fix-ci: spec.maxRetries: ")
    assert d.status.message.endswith("fix the spec and create the goal again")


def test_a_missing_agent_names_the_field_and_the_fix() -> None:
    d = decide(goal(spec={"agentRef": {"name": "ghost"}}))
    assert d.status is not None and d.status.warning
    assert d.status.message == ("Goal team/fix-ci: spec.agentRef.name 'ghost' does not exist in namespace team; "
                                "create the Agent or fix the name")


def test_a_blocked_goal_lists_what_it_waits_for() -> None:
    d = decide(goal(spec={"dependsOn": ["build", "lint"]}), world=World(goals=[goal("lint", phase="Succeeded")]))
    assert d.status is not None and d.status.fields == {"agent": "coder", "waitingFor": ["build"]}
    assert conditions(d) == {"DependenciesMet": (False, "Waiting"), "Dispatched": (False, "DependenciesPending")}


def test_a_long_dependency_cycle_is_described_in_one_line() -> None:
    names = [f"g{i}" for i in range(40)]
    chain = [goal(n, phase="Blocked", spec={"dependsOn": [names[(i + 1) % 40]]}) for i, n in enumerate(names)]
    d = decide(chain[0], world=World(goals=chain))
    assert d.status is not None and d.status.reason == "DependencyCycle"
    assert "... (25 more)" in d.status.message


def test_the_timeout_is_the_next_look_of_a_running_goal_when_it_comes_before_the_heartbeat_check() -> None:
    d = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1", startedAt=at(540), spec={"timeout": "10m"}), [pod()])
    assert d.requeue == 60.5


def test_a_running_goal_records_its_approvals_with_the_status() -> None:
    assert decide(goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod()]).approvals
    assert not decide(goal(phase="Running", attempt=1, pod="fix-ci-a1"), [pod(phase="Failed", exit_code=1)]).approvals


def test_an_approval_request_says_how_to_decide() -> None:
    d = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1",
                    pendingApprovals=[REQUEST]), [pod()])
    assert d.status is not None and d.status.message == (
        "kubectl delete ns prod -- approve with: kubectl annotate goal/fix-ci overseer.dev/approve=a-1 "
        "(or overseer.dev/deny=a-1)")


def test_a_forged_phase_is_reported_with_who_wrote_it() -> None:
    forged = goal(phase="Succeeded")
    forged["metadata"]["managedFields"] = [{**operator_wrote("phase"), "manager": "kubectl-patch"}]
    [event] = decide(forged).events
    assert (event.type, event.reason) == ("Warning", "PhaseIgnored")
    assert event.message.startswith("status.phase Succeeded was written by kubectl-patch, not the operator")


def test_a_selector_keeps_the_agent_it_was_given_else_picks_the_least_busy_ready_one() -> None:
    selector = {"agentRef": None, "agentSelector": {"matchLabels": {"pool": "ci"}}}
    pool = [agent("busy", labels={"pool": "ci"}, slots=5), agent("idle", labels={"pool": "ci"}, slots=5),
            agent("down", ready=False, labels={"pool": "ci"}, slots=5), agent("coder", slots=5)]
    world = World(agents_=pool, live={"busy": 3, "idle": 1})
    plan = decide(goal(spec=selector), world=world).dispatch
    assert plan is not None and plan.agent.name == "idle"
    plan = decide(goal(spec=selector, agent="busy"), world=world).dispatch
    assert plan is not None and plan.agent.name == "busy"


# ---- starting an attempt: a slot, the pod, the quota ---------------------------------------------


def plan_for(g: Raw, world: World, pods: list[Raw] | None = None) -> Dispatch:
    d = decide(g, pods, world)
    assert d.dispatch is not None and d.status is None
    return d.dispatch


def queued(name: str, created: float, priority: int = 0, **status: Any) -> Raw:
    return goal(name, phase="Queued", spec={"priority": priority}, created=created, agent="coder", **status)


@pytest.mark.parametrize("slots, live, others, free", [
    (1, 0, [], 1),                                                       # an idle agent
    (1, 1, [], 0),                                                       # its one slot taken
    (2, 0, [queued("older", 900)], 0 + 2),                               # two free: the older goal takes one, this the other
    (1, 0, [queued("older", 900)], 0),                                   # the older goal goes first
    (1, 0, [queued("younger", 60)], 1),                                  # this goal is older
    (1, 0, [queued("urgent", 60, priority=5)], 0),                       # higher priority goes first
    (1, 0, [queued("backing-off", 900, retryAt=lifecycle.iso(NOW + timedelta(seconds=30)))], 1),  # waits on its own timer
    (3, 1, [queued("a", 900), queued("b", 800)], 0),                     # two ahead, two free
])
def test_a_slot_goes_to_the_first_goal_in_the_agents_queue(slots: int, live: int, others: list[Raw], free: int) -> None:
    world = World(goals=others, agents_=[agent(slots=slots)], live={"coder": live})
    me = goal(created=600)
    assert lifecycle.free_slots(me, plan_for(me, world), world, NOW) == free


def lead_running(agent_name: str = "coder", phase: str = "Running") -> Raw:
    return goal("lead", phase=phase, attempt=1, pod="lead-a1", agent=agent_name)


def sibling(name: str, created: float, **status: Any) -> Raw:
    return {**spawned(), "metadata": {**spawned()["metadata"], "name": name, "creationTimestamp": at(created)},
            "status": {"agent": "coder", **status}}


@pytest.mark.parametrize("parent, others, free", [
    (lead_running(), [], 1),                                              # the parent's slot is lent to it
    (lead_running(phase="AwaitingApproval"), [], 1),                      # a parent waiting for approval holds its pod too
    (lead_running(), [queued("older", 900)], 1),                          # the agent's queue does not stand before it
    (lead_running(), [sibling("first", 900, phase="Running")], 0),        # a sibling runs in the lent slot
    (lead_running(), [sibling("first", 900, phase="Queued")], 0),         # an older sibling goes first
    (lead_running(), [sibling("second", 1, phase="Queued")], 1),          # this sub-goal is older
    (lead_running(), [sibling("done", 900, phase="Succeeded")], 1),       # an ended sibling gave the slot back
    (lead_running(agent_name="admin"), [], 0),                            # the parent runs on another agent's slots
    (goal("lead", phase="Succeeded", agent="coder"), [], 0),              # an ended parent holds no slot to lend
])
def test_a_sub_goal_runs_in_its_running_parents_slot_when_the_agent_is_full(parent: Raw, others: list[Raw],
                                                                             free: int) -> None:
    """maxConcurrentGoals 1: the parent holds the agent's only slot while it waits for its sub-goal."""
    world = World(goals=[parent, *others], live={"coder": 1}, pods_={"lead": [lead_pod()]})
    me = spawned()
    plan = plan_for(me, World(goals=[lead_running()], pods_={"lead": [lead_pod()]}))
    assert lifecycle.free_slots(me, plan, world, NOW) == free


def test_a_goal_without_a_parent_gets_no_lent_slot() -> None:
    world = World(goals=[lead_running()], live={"coder": 1})
    me = goal(created=600)
    assert lifecycle.free_slots(me, plan_for(me, world), world, NOW) == 0


def test_a_goal_without_a_slot_is_queued_until_a_slot_frees() -> None:
    me = goal(spec={"timeout": "1h", "dependsOn": ["build"]}, startedAt=at(600))
    world = World(goals=[goal("build", phase="Succeeded")])
    d = lifecycle.waiting_for_slot(plan_for(me, world))
    assert summary(d) == ("Queued", "Queued", (), (), 3000.5, None)  # a freed slot wakes it; else the timeout
    assert conditions(d) == {"DependenciesMet": (True, "Succeeded"), "Dispatched": (False, "WaitingForSlot")}
    assert d.status is not None and d.status.reason in lifecycle.WAITING_FOR_SLOT
    assert d.status.message == "waiting for a free slot of agent coder (maxConcurrentGoals 1)"


def test_a_pod_the_resource_quota_refuses_queues_the_goal_and_tries_again_after_the_backoff() -> None:
    plan = plan_for(goal(), World())
    d = lifecycle.quota_exceeded(plan, "fix-ci-a1", "exceeded quota: agents, requested: pods=1", SETTINGS)
    assert summary(d) == ("Queued", "QuotaExceeded", (), (), 10, None)
    assert d.status is not None and d.status.warning and d.status.reason in lifecycle.WAITING_FOR_SLOT
    assert d.status.message == "pod fix-ci-a1 would exceed a ResourceQuota: exceeded quota: agents, requested: pods=1"


def test_a_created_pod_makes_the_goal_running() -> None:
    plan = plan_for(goal(phase="Queued", retryAt=at(5)), World())
    d = lifecycle.dispatched(goal(phase="Queued", retryAt=at(5)), plan, "fix-ci-a1", NOW, SETTINGS)
    assert summary(d) == ("Running", "Dispatched", (), (), 300, None)  # the heartbeat check
    assert d.status is not None and d.status.message == "attempt 1 running in pod fix-ci-a1 as overseer-agent-coder"
    assert d.status.fields == {"agent": "coder", "pod": "fix-ci-a1", "attempt": 1, "startedAt": "2026-12-01T12:00:00Z",
                               "waitingFor": [], "retryAt": None}
    assert conditions(d) == {"Dispatched": (True, "PodCreated")}


def test_a_retry_keeps_the_first_start_and_looks_for_a_pod_the_cache_has_not_shown() -> None:
    g = goal(phase="Queued", attempt=1, startedAt=at(100), retryAt=at(1), spec={"timeout": "5m"})
    plan = plan_for(g, World(), [pod(phase="Failed", exit_code=1)])
    assert (plan.attempt, plan.retry, plan.started_at) == (2, True, at(100))
    assert not plan_for(goal(), World()).retry
    d = lifecycle.dispatched(g, plan, "fix-ci-a2", NOW, SETTINGS)
    assert d.requeue == 200.5  # the timeout comes before the heartbeat check
    assert d.status is not None and d.status.fields["startedAt"] == at(100)


def test_a_goal_with_a_workspace_shows_its_claim() -> None:
    world = World(agents_=[agent(workspace={"size": "1Gi"})],
                  claims={"fix-ci-workspace": {"metadata": {"name": "fix-ci-workspace"}, "status": {"phase": "Bound"}}})
    g = goal()
    d = lifecycle.dispatched(g, plan_for(g, world), "fix-ci-a1", NOW, SETTINGS)
    assert conditions(d)["WorkspaceReady"] == (True, "ClaimBound")
    assert d.status is not None and d.status.fields["workspace"] == {"claimName": "fix-ci-workspace", "claimPhase": "Bound"}
    running = decide(goal(phase="Running", attempt=1, pod="fix-ci-a1", workspace=d.status.fields["workspace"]),
                     [pod()], world)
    assert conditions(running)["WorkspaceReady"] == (True, "ClaimBound")
    assert running.status is not None and "workspace" not in running.status.fields  # unchanged: not written again
