"""An Agent's approved self-modifications in its operator-owned ConfigMap: stored when a person
approves a Goal's selfModification request, marked reverted by the Agent's revert annotation.

Only the operator writes the ConfigMap (an agent's Role may only get it), and every write is
conditional on the resourceVersion it read: a key that exists is never overwritten by a store,
and two workers never lose each other's keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from overseer import approvals, modifications
from overseer.api import Agent
from overseer.api.meta import LABEL_AGENT, LABEL_MANAGED_BY, MANAGED_BY
from overseer.kube import ApiError, Kube, path

from .agent_resources import owner_reference

logger = logging.getLogger(__name__)

Raw = dict[str, Any]
ATTEMPTS = 5  # conditional writes retried after a conflict


def render_configmap(agent: Agent, data: dict[str, str]) -> dict[str, Any]:
    """The modifications ConfigMap of agent holding data; owned by the Agent, so it goes with it."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": modifications.configmap_name(agent.name), "namespace": agent.namespace,
                     "labels": {LABEL_AGENT: agent.name, LABEL_MANAGED_BY: MANAGED_BY},
                     "ownerReferences": [owner_reference(agent)]},
        "data": data,
    }


@dataclass(frozen=True)
class Approved:
    """An approved selfModification request of a Goal, checked and ready to store."""

    id: str
    record: dict[str, Any]


def approved_requests(goal: Raw) -> tuple[list[Approved], list[str]]:
    """The Goal's pending selfModification requests that its annotations approve, as records;
    and why any others cannot be stored."""
    ok: list[Approved] = []
    problems: list[str] = []
    meta = goal["metadata"]
    uid = meta.get("uid") or meta["name"]
    for request in (goal.get("status") or {}).get("pendingApprovals") or []:
        verdict = approvals.decision(goal, str(request.get("id", "")))
        if request.get("kind") != modifications.KIND or verdict is None or verdict[0] != "approved":
            continue
        try:
            proposal = modifications.parse_proposal(request.get("detail"))
        except ValueError as e:
            problems.append(f"request {request['id']}: {e}")
            continue
        if modifications.proposal_id(request["detail"], uid) != request["id"]:
            problems.append(f"request {request['id']}: its detail does not match its id (it changed after it "
                            f"was requested); not stored")
            continue
        by, at = approvals.decided_by(goal, approvals.APPROVE)
        ok.append(Approved(request["id"], modifications.record(request["id"], proposal, meta["name"], by, at)))
    return ok, problems


class ModificationStore:
    """Reads and writes the modifications ConfigMaps through the operator's client."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    @staticmethod
    def url(namespace: str, agent: str) -> str:
        return path("v1", "configmaps", namespace, modifications.configmap_name(agent))

    async def store(self, agent: Raw, approved: list[Approved]) -> list[str]:
        """Add the records whose keys are not there yet; the ids added."""
        model = Agent.model_validate(agent)
        url = self.url(model.namespace, model.name)
        for _ in range(ATTEMPTS):
            cm = await self.kube.get(url)
            if cm is None:
                data = {a.id: json.dumps(a.record, sort_keys=True) for a in approved}
                if await self.kube.create(path("v1", "configmaps", model.namespace), render_configmap(model, data)):
                    return list(data)
                continue  # created meanwhile by another worker: read it
            new = {a.id: json.dumps(a.record, sort_keys=True) for a in approved if a.id not in (cm.get("data") or {})}
            if not new or await self._patch(url, cm, new):
                return list(new)
        raise RuntimeError(f"ConfigMap {model.namespace}/{modifications.configmap_name(model.name)} kept changing")

    async def revert(self, agent: Raw, ids: list[str]) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
        """Mark the records of ids reverted, on behalf of whoever set the revert annotation.
        Returns (records reverted now, ids not found, the ConfigMap's data afterwards)."""
        meta = agent["metadata"]
        url = self.url(meta["namespace"], meta["name"])
        for _ in range(ATTEMPTS):
            cm = await self.kube.get(url)
            data = dict((cm or {}).get("data") or {})
            missing = [i for i in ids if i not in data]
            by, at = approvals.set_by(agent, modifications.REVERT)
            changed: dict[str, str] = {}
            reverted: list[dict[str, Any]] = []
            for rec in modifications.records({i: data[i] for i in ids if i in data}):
                if not rec.get("reverted"):
                    rec.update(reverted=True, revertedBy=by, revertedAt=at)
                    changed[rec["id"]] = json.dumps(rec, sort_keys=True)
                    reverted.append(rec)
            if not changed or (cm is not None and await self._patch(url, cm, changed)):
                return reverted, missing, {**data, **changed}
        raise RuntimeError(f"ConfigMap {meta['namespace']}/{modifications.configmap_name(meta['name'])} kept changing")

    async def _patch(self, url: str, cm: Raw, data: dict[str, str]) -> bool:
        """Merge data into the ConfigMap if it is still at the version read; False on a conflict."""
        body = {"metadata": {"resourceVersion": cm["metadata"]["resourceVersion"]}, "data": data}
        try:
            return await self.kube.merge_patch(url, body) is not None
        except ApiError as e:
            if e.status == 409:
                return False
            raise


def describe(rec: dict[str, Any]) -> str:
    """One line naming a record, for events."""
    if rec.get("kind") == modifications.LESSON:
        lesson = " ".join(str(rec.get("lesson", "")).split())
        return f"lesson {rec['id']} ({lesson[:80]}{'…' if len(lesson) > 80 else ''})"
    return f"script tool {(rec.get('tool') or {}).get('name')} ({rec['id']})"
