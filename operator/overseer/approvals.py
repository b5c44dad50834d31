"""Approvals by annotation, shared by the operator and the agent runtime.

A person approves or denies a pending request with `kubectl annotate goal/NAME
overseer.dev/approve=ID` (or `overseer.dev/deny=ID`, optionally `overseer.dev/deny-reason`).
Annotations are metadata, which an agent's ServiceAccount cannot write, so an agent can never
approve its own request. Who set the annotation and when come from the API server's
managedFields.
"""

from __future__ import annotations

from typing import Any

from overseer.api import GROUP
from overseer.kube import now_iso

APPROVE = f"{GROUP}/approve"
DENY = f"{GROUP}/deny"
DENY_REASON = f"{GROUP}/deny-reason"
STEER = f"{GROUP}/steer"


def decision(goal: dict[str, Any], approval_id: str) -> tuple[str, str] | None:
    """("approved" | "denied", reason) once the Goal's annotations decide approval_id."""
    notes = goal.get("metadata", {}).get("annotations") or {}
    if notes.get(APPROVE) == approval_id:
        return "approved", ""
    if notes.get(DENY) == approval_id:
        return "denied", notes.get(DENY_REASON, "")
    return None


def set_by(goal: dict[str, Any], key: str) -> tuple[str, str]:
    """(field manager, time) of whoever last set annotation key, e.g. ("kubectl-annotate", ...)."""
    for entry in goal.get("metadata", {}).get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in fields:
            return entry.get("manager", "unknown"), entry.get("time") or now_iso()
    return "unknown", now_iso()


def record_decisions(goal: dict[str, Any]) -> list[dict[str, Any]]:
    """status.decisions plus any decision the annotations hold that it lacks."""
    decisions = list((goal.get("status") or {}).get("decisions") or [])
    known = {d["id"] for d in decisions}
    notes = goal.get("metadata", {}).get("annotations") or {}
    for key, verdict in ((APPROVE, "approved"), (DENY, "denied")):
        approval_id = notes.get(key)
        if approval_id and approval_id not in known:
            by, at = set_by(goal, key)
            decisions.append({"id": approval_id, "decision": verdict, "decidedBy": by, "decidedAt": at})
            known.add(approval_id)
    return decisions
