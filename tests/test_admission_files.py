"""The admission policies shipped in charts/overseer/files/admission agree with the code: the
operator looks for each of them (and may read them), and the confinement policy locks every
status field the agent does not report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from overseer.api.goal import GoalStatus
from overseer.kube import ApiError
from overseer.operator import admission

ROOT = Path(__file__).resolve().parents[1]
ADMISSION = ROOT / "charts" / "overseer" / "files" / "admission"
AGENT_FIELDS = {"iteration", "tokens", "progress", "heartbeat", "result", "failureReason", "lastTool",
                "pendingApprovals", "capabilityCalls", "knowledgeBacklog"}


def shipped() -> list[dict[str, Any]]:
    return [doc for f in sorted(ADMISSION.glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text()) if doc]


def test_the_operator_looks_for_every_policy_and_binding_shipped() -> None:
    plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
              "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
              "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
              "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings"}
    found = sorted((plural[d["kind"]], d["metadata"]["name"]) for d in shipped())
    assert found == sorted(admission.expected())
    for doc in shipped():
        assert doc["apiVersion"] == "admissionregistration.k8s.io/v1"
        if doc["kind"].endswith("Binding"):
            assert doc["spec"]["policyName"] == doc["metadata"]["name"]
            assert doc["spec"].get("validationActions", ["Deny"]) == ["Deny"]


def test_the_operators_cluster_role_may_read_exactly_those() -> None:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "overseer.yaml").read_text()))
    role = next(d for d in docs if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "overseer-operator-admission-policies")
    [rule] = [r for r in role["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert rule["verbs"] == ["get"]
    assert sorted(rule["resources"]) == sorted({r for r, _ in admission.expected()})
    assert sorted(rule["resourceNames"]) == sorted({n for _, n in admission.expected()})


def test_the_confinement_policy_locks_every_status_field_an_agent_does_not_report() -> None:
    policy = next(d for d in shipped() if d["metadata"]["name"] == "overseer-agent-confinement"
                  and d["kind"] == "ValidatingAdmissionPolicy")
    unchanged = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "unchanged")
    locked = set(re.findall(r"'(\w+)': object\.\?status\.\?(\w+) == oldObject\.\?status\.\?(\w+)", unchanged))
    assert all(a == b == c for a, b, c in locked)
    status_fields = {f.alias or f.serialization_alias or name for name, f in GoalStatus.model_fields.items()}
    assert {a for a, _, _ in locked} == status_fields - AGENT_FIELDS
    assert AGENT_FIELDS < status_fields


class Kube:
    def __init__(self, present: set[str], error: ApiError | None = None) -> None:
        self.present, self.error = present, error

    async def get(self, url: str) -> dict[str, Any] | None:
        if self.error:
            raise self.error
        return {"metadata": {}} if url.rsplit("/", 2)[-2] + "/" + url.rsplit("/", 1)[-1] in self.present else None


async def test_every_policy_in_place_verifies_approvals() -> None:
    state = await admission.check(Kube({f"{r}/{n}" for r, n in admission.expected()}))  # type: ignore[arg-type]
    assert state.complete and state.condition()[:2] == (True, "PoliciesInstalled")


async def test_a_missing_binding_is_named_in_the_condition() -> None:
    present = {f"{r}/{n}" for r, n in admission.expected()} - {"validatingadmissionpolicybindings/overseer-approvals"}
    state = await admission.check(Kube(present))  # type: ignore[arg-type]
    ok, reason, message = state.condition()
    assert (ok, reason) == (False, "PoliciesMissing")
    assert message.startswith("missing: validatingadmissionpolicybindings/overseer-approvals; approvals work but are "
                              "recorded as unverified")


async def test_policies_the_operator_may_not_read_are_reported_with_the_rule_it_needs() -> None:
    state = await admission.check(Kube(set(), ApiError(403, "Forbidden", "no", "GET", "/x")))  # type: ignore[arg-type]
    ok, reason, message = state.condition()
    assert (ok, reason) == (False, "PoliciesUnreadable") and "needs get on mutatingadmissionpolicies," in message
