"""Approvals by annotation, shared by the operator and the agent runtime.

A person approves or denies a pending request with `kubectl annotate goal/NAME
overseer.dev/approve=ID` (or `overseer.dev/deny=ID`, optionally `overseer.dev/deny-reason`).
The admission policies (charts/overseer/files/admission/approvals.yaml) let only holders of
verb `approve` on goals.overseer.dev set them, and stamp the API server's name of the caller
into `overseer.dev/decided-by`. An agent's ServiceAccount cannot write annotations at all, so
an agent can never approve its own request.
"""

from __future__ import annotations

from typing import Any

from overseer.api import GROUP
from overseer.kube import now_iso

APPROVE = f"{GROUP}/approve"
DENY = f"{GROUP}/deny"
DENY_REASON = f"{GROUP}/deny-reason"
DECIDED_BY = f"{GROUP}/decided-by"
"""Stamped by the API server (MutatingAdmissionPolicy overseer-decided-by): who set approve/deny."""
CREATED_BY = f"{GROUP}/created-by"
"""Stamped by the API server (MutatingAdmissionPolicy overseer-goal-creator) on goals an agent creates."""
STEER = f"{GROUP}/steer"


def decision(goal: dict[str, Any], approval_id: str) -> tuple[str, str] | None:
    """("approved" | "denied", reason) once the Goal's annotations decide approval_id."""
    notes = goal.get("metadata", {}).get("annotations") or {}
    if notes.get(APPROVE) == approval_id:
        return "approved", ""
    if notes.get(DENY) == approval_id:
        return "denied", notes.get(DENY_REASON, "")
    return None


def set_by(obj: dict[str, Any], key: str) -> tuple[str, str]:
    """(field manager, time) of whoever last set annotation key, e.g. ("kubectl-annotate", ...).
    The manager is a name the client chose: evidence of the tool, not of the person."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in fields:
            return entry.get("manager", "unknown"), entry.get("time") or now_iso()
    return "unknown", now_iso()


def decided_by(goal: dict[str, Any], key: str, trust_stamp: bool = True) -> tuple[str, str]:
    """(who, when) decided through annotation key (APPROVE or DENY): the user the API server
    stamped in DECIDED_BY; without that stamp, or when the admission policies that make it the
    API server's are missing (trust_stamp False: anyone could have written it), the field
    manager, marked as such."""
    manager, at = set_by(goal, key)
    stamped = (goal.get("metadata", {}).get("annotations") or {}).get(DECIDED_BY) if trust_stamp else None
    return (stamped or f"unverified field manager {manager}"), at


def record_decisions(goal: dict[str, Any], known: list[dict[str, Any]], verified: bool) -> list[dict[str, Any]]:
    """known (the decisions the operator recorded before) plus any decision the annotations hold
    that it lacks; verified says whether the admission policies stood behind the annotations."""
    decisions = list(known)
    ids = {d["id"] for d in decisions}
    notes = goal.get("metadata", {}).get("annotations") or {}
    for key, verdict in ((APPROVE, "approved"), (DENY, "denied")):
        approval_id = notes.get(key)
        if approval_id and approval_id not in ids:
            by, at = decided_by(goal, key, trust_stamp=verified)
            decisions.append({"id": approval_id, "decision": verdict, "decidedBy": by, "decidedAt": at,
                              "verified": verified and bool(notes.get(DECIDED_BY))})
            ids.add(approval_id)
    return decisions
