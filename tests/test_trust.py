"""The operator acts on a goal's phase and decisions only as it wrote them: a value another
writer put in status (an agent's forged Succeeded, a planted decision) is worked out again from
the pods and the annotations, and a retry is decided from the pod, never from the status."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from overseer.operator import trust
from overseer.operator.admission import PolicyState
from overseer.operator.goals import GoalReconciler
from overseer.operator.runtime import Runtime
from overseer.operator.settings import Settings

NS = "team"


class FakeKube:
    """Records writes; a merge patch of status returns the object with the patch applied."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self.created: list[dict[str, Any]] = []

    async def merge_patch(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((url, body))
        name = url.split("/")[-2]
        obj = copy.deepcopy(self.rt.stores["goals"].get((NS, name)))
        obj.setdefault("status", {}).update(body["status"])
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return obj

    async def delete(self, url: str) -> bool:
        self.deleted.append(url)
        return True

    async def create(self, url: str, body: dict[str, Any], answer: bool = True) -> dict[str, Any]:
        self.created.append(body)
        return body

    async def get(self, url: str, params: Any = None) -> dict[str, Any]:
        return {"items": []}


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.recorded.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.recorded]


def written_by(manager: str, *fields: str) -> dict[str, Any]:
    return {"manager": manager, "operation": "Update", "subresource": "status",
            "fieldsV1": {"f:status": {f"f:{f}": {} for f in fields}}}


def goal(name: str = "tests", phase: str = "Running", managers: list[dict[str, Any]] | None = None,
         **status: Any) -> dict[str, Any]:
    return {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
            "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}", "resourceVersion": "10",
                         "generation": 1, "creationTimestamp": "2026-12-01T10:00:00Z",
                         "managedFields": managers if managers is not None else [written_by("overseer-operator", "phase")]},
            "spec": {"description": "run the tests", "agentRef": {"name": "coder"}, "maxRetries": 1, **status.pop("spec", {})},
            "status": {"phase": phase, "agent": "coder", **status}}


def pod(goal_name: str = "tests", attempt: int = 1, phase: str = "Running", exit_code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"exitCode": exit_code}}}]
    return {"metadata": {"namespace": NS, "name": f"{goal_name}-a{attempt}", "creationTimestamp": "2026-12-01T10:00:01Z",
                         "labels": {"overseer.dev/goal": goal_name, "overseer.dev/agent": "coder",
                                    "overseer.dev/attempt": str(attempt)}},
            "status": status}


def world(*objects: dict[str, Any], policies: PolicyState | None = None) -> tuple[Runtime, GoalReconciler, FakeKube, Events]:
    events = Events()
    rt = Runtime(kube=None, settings=Settings(heartbeat_timeout_seconds=0), events=events)  # type: ignore[arg-type]
    kube = FakeKube(rt)
    rt.kube = kube  # type: ignore[assignment]
    rt.admission = policies or PolicyState()
    rt.stores["agents"].upsert({"metadata": {"namespace": NS, "name": "coder", "uid": "agent-uid"},
                                "spec": {"model": {"name": "m", "apiKeySecretRef": {"name": "s", "key": "k"}},
                                         "maxConcurrentGoals": 2},
                                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                                           "message": "", "lastTransitionTime": "2026-12-01T10:00:00Z"}]}})
    for obj in objects:
        rt.stores["pods" if "labels" in obj["metadata"] else "goals"].upsert(obj)
    return rt, GoalReconciler(rt), kube, events


def status_writes(kube: FakeKube) -> list[dict[str, Any]]:
    return [body["status"] for _, body in kube.patches]


# ---- phase --------------------------------------------------------------------------------------


def test_only_the_operators_own_phase_is_trusted() -> None:
    assert trust.trusted_phase(goal(phase="Succeeded")) == "Succeeded"
    assert trust.trusted_phase(goal(phase="Succeeded", managers=[])) == "Succeeded"  # nobody else wrote it
    forged = goal(phase="Succeeded", managers=[written_by("overseer-operator", "attempt"),
                                               written_by("overseer-agent", "phase", "heartbeat")])
    assert trust.trusted_phase(forged) is None
    assert trust.written_by_others(forged, "phase") == {"overseer-agent"}


async def test_a_goal_another_writer_marked_succeeded_keeps_its_pod_and_runs_on() -> None:
    forged = goal(phase="Succeeded", pod="tests-a1", attempt=1,
                  managers=[written_by("kubectl-patch", "phase")])
    rt, goals, kube, events = world(forged, pod())

    await goals.reconcile((NS, "tests"))

    assert kube.deleted == []
    assert status_writes(kube)[-1]["phase"] == "Running"
    assert "PhaseIgnored" in events.reasons()
    assert any("status.phase Succeeded was written by kubectl-patch" in m for _, _, m in events.recorded)


async def test_the_operators_own_terminal_phase_is_final() -> None:
    rt, goals, kube, _ = world(goal(phase="Succeeded", pod="tests-a1", attempt=1), pod())
    await goals.reconcile((NS, "tests"))
    # Only the kstatus conditions of a finished goal may still be written; its phase stays.
    assert kube.deleted == [f"/api/v1/namespaces/{NS}/pods/tests-a1"]
    assert all("phase" not in body["status"] for _, body in kube.patches)


@pytest.mark.parametrize("exit_code, attempt, reason", [(2, 1, "AgentGaveUp"), (1, 2, "RetriesExhausted")])
async def test_a_failed_goal_set_back_to_pending_gets_no_new_attempt(exit_code: int, attempt: int, reason: str) -> None:
    # Even with a phase the operator would trust: whether to retry is read from the pod and the spec.
    for managers in ([written_by("overseer-agent", "phase")], [written_by("overseer-operator", "phase")]):
        rt, goals, kube, _ = world(goal(phase="Pending", attempt=attempt, pod=f"tests-a{attempt}", managers=managers),
                                   pod(attempt=attempt, phase="Failed", exit_code=exit_code))
        await goals.reconcile((NS, "tests"))
        assert kube.created == []
        assert status_writes(kube)[-1]["phase"] == "Failed"
        assert reason in str(status_writes(kube)[-1].get("conditions") or status_writes(kube)[-1].get("message"))


async def test_a_retryable_failure_is_still_retried() -> None:
    rt, goals, kube, _ = world(goal(phase="Running", attempt=1, pod="tests-a1"), pod(phase="Failed", exit_code=1))
    await goals.reconcile((NS, "tests"))
    assert status_writes(kube)[-1]["phase"] == "Queued" and "retryAt" in status_writes(kube)[-1]


async def test_a_dependency_another_writer_marked_succeeded_still_blocks() -> None:
    tests = goal(phase="Succeeded", managers=[written_by("overseer-agent", "phase")])
    deploy = goal("deploy", phase="Blocked", spec={"dependsOn": ["tests"]})
    rt, goals, kube, _ = world(tests, deploy)

    await goals.reconcile((NS, "deploy"))

    assert kube.created == []
    assert all(w.get("phase", "Blocked") == "Blocked" for w in status_writes(kube))
    rt.stores["goals"].upsert(goal(phase="Succeeded"))  # the operator's own word
    await goals.reconcile((NS, "deploy"))
    assert [p["metadata"]["name"] for p in kube.created] == ["deploy-a1"]


def test_a_malformed_failure_reason_from_the_agent_is_not_used_as_a_condition_reason() -> None:
    assert trust.failure_reason("BudgetExhausted", "AgentGaveUp") == "BudgetExhausted"
    assert trust.failure_reason("rm -rf /; echo", "AgentGaveUp") == "AgentGaveUp"
    assert trust.failure_reason(None, "AgentGaveUp") == "AgentGaveUp"


# ---- decisions ----------------------------------------------------------------------------------

APPROVED_BY_ALICE = {"overseer.dev/approve": "deploy-1", "overseer.dev/decided-by": "system:serviceaccount:team:alice"}


def awaiting(annotations: dict[str, str], decisions: list[dict[str, Any]], managers: list[dict[str, Any]]) -> dict[str, Any]:
    g = goal(pod="tests-a1", attempt=1, managers=managers, decisions=decisions,
             pendingApprovals=[{"id": "deploy-1", "kind": "toolCall", "summary": "deploy", "requestedAt": "2026-12-01T10:00:00Z"}])
    g["metadata"]["annotations"] = annotations
    return g


async def test_a_decision_is_recorded_with_the_user_the_api_server_stamped() -> None:
    rt, goals, kube, _ = world(awaiting(APPROVED_BY_ALICE, [], [written_by("overseer-operator", "phase")]), pod())
    await goals.reconcile((NS, "tests"))
    [decision] = status_writes(kube)[-1]["decisions"]
    assert decision["decidedBy"] == "system:serviceaccount:team:alice" and decision["verified"] is True


async def test_without_the_admission_policies_a_decision_is_recorded_unverified() -> None:
    annotated = awaiting({"overseer.dev/approve": "deploy-1"}, [], [
        written_by("overseer-operator", "phase"),
        {"manager": "kubectl-annotate", "time": "2026-12-01T10:05:00Z",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/approve": {}}}}}])
    rt, goals, kube, _ = world(annotated, pod(), policies=PolicyState(missing=("mutatingadmissionpolicies/overseer-decided-by",)))
    await goals.reconcile((NS, "tests"))
    [decision] = status_writes(kube)[-1]["decisions"]
    assert decision == {"id": "deploy-1", "decision": "approved", "decidedBy": "unverified field manager kubectl-annotate",
                        "decidedAt": "2026-12-01T10:05:00Z", "verified": False}


async def test_without_the_admission_policies_a_decided_by_annotation_is_not_believed() -> None:
    # Without the mutating policy anyone who may patch the Goal could have written the name.
    annotated = awaiting({"overseer.dev/approve": "deploy-1", "overseer.dev/decided-by": "system:serviceaccount:team:alice"},
                         [], [written_by("overseer-operator", "phase"),
                              {"manager": "kubectl-annotate", "time": "2026-12-01T10:05:00Z",
                               "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/approve": {}}}}}])
    rt, goals, kube, _ = world(annotated, pod(), policies=PolicyState(missing=("mutatingadmissionpolicies/overseer-decided-by",)))
    await goals.reconcile((NS, "tests"))
    [decision] = status_writes(kube)[-1]["decisions"]
    assert (decision["decidedBy"], decision["verified"]) == ("unverified field manager kubectl-annotate", False)


async def test_decisions_planted_by_another_writer_are_dropped() -> None:
    planted = [{"id": "rm-rf", "decision": "approved", "decidedBy": "system:serviceaccount:team:admin",
                "decidedAt": "2026-12-01T10:00:00Z", "verified": True}]
    rt, goals, kube, events = world(awaiting({}, planted, [written_by("overseer-operator", "phase"),
                                                           written_by("overseer-agent", "decisions")]), pod())
    await goals.reconcile((NS, "tests"))
    assert status_writes(kube)[-1]["decisions"] == []
    assert any(r == "DecisionsRestored" and "dropped rm-rf" in m for _, r, m in events.recorded)


async def test_decisions_erased_while_the_operator_runs_are_restored() -> None:
    rt, goals, kube, _ = world(awaiting(APPROVED_BY_ALICE, [], [written_by("overseer-operator", "phase")]), pod())
    await goals.reconcile((NS, "tests"))
    recorded = status_writes(kube)[-1]["decisions"]
    # Someone empties the list under the operator's own manager name; the annotation moved on meanwhile.
    erased = awaiting({"overseer.dev/approve": "deploy-2", "overseer.dev/decided-by": "system:serviceaccount:team:bob"},
                      [], [written_by("overseer-operator", "phase", "decisions")])
    erased["metadata"]["resourceVersion"] = "20"
    rt.stores["goals"].upsert(erased)
    await goals.reconcile((NS, "tests"))
    assert [d["id"] for d in status_writes(kube)[-1]["decisions"]] == [recorded[0]["id"], "deploy-2"]
