"""A goal's workspace: a PersistentVolumeClaim per Goal when its Agent has spec.workspace (kept
across attempts, optionally seeded from a dependency's claim), else an emptyDir lost with each
pod. Pure renderers and decisions; goals.py does the I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from overseer.api import Agent, Goal
from overseer.api.meta import LABEL_AGENT, LABEL_GOAL, LABEL_MANAGED_BY, MANAGED_BY
from overseer.contract import WORKSPACE, WORKSPACE_FROM, Env

from .agent_resources import owner_reference

SUFFIX = "-workspace"


def claim_name(goal_name: str) -> str:
    """Deterministic per goal, so every attempt (and a restarted operator) finds the same claim,
    and a dependent goal can name it without trusting anyone's status."""
    if len(goal_name) + len(SUFFIX) <= 253:
        return goal_name + SUFFIX
    digest = hashlib.sha256(goal_name.encode()).hexdigest()[:8]
    return f"{goal_name[:253 - len(SUFFIX) - 9].rstrip('.-')}-{digest}{SUFFIX}"


def render_claim(goal: Goal, agent: Agent) -> dict[str, Any]:
    """The goal's claim, owned by the goal (deleted with it) unless spec.workspace.retain."""
    spec = agent.spec.workspace
    assert spec is not None, "render_claim needs an Agent with spec.workspace"
    metadata: dict[str, Any] = {
        "name": claim_name(goal.name), "namespace": goal.namespace,
        "labels": {LABEL_GOAL: goal.name, LABEL_AGENT: agent.name, LABEL_MANAGED_BY: MANAGED_BY},
    }
    if not spec.retain:
        metadata["ownerReferences"] = [owner_reference(goal)]
    claim_spec: dict[str, Any] = {"accessModes": list(spec.access_modes),
                                  "resources": {"requests": {"storage": str(spec.size)}}}
    if spec.storage_class_name is not None:
        claim_spec["storageClassName"] = spec.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": claim_spec}


def render_volumes(goal: Goal | None, agent: Agent, source_claim: str | None) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts, env) of the workspace and, with spec.workspaceFrom, the dependency's claim
    mounted read-only (the agent copies from it in mode Copy). No goal: a warm pod's (an emptyDir)."""
    if agent.spec.workspace is not None and goal is not None:
        volumes: list[dict[str, Any]] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(goal.name)}}]
        kind = "claim"
    else:
        volumes = [{"name": "workspace", "emptyDir": {}}]
        kind = "emptyDir"
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    env = [{"name": Env.WORKSPACE, "value": WORKSPACE}, {"name": Env.WORKSPACE_VOLUME, "value": kind}]
    source = goal.spec.workspace_from if goal is not None else None
    if source is not None and source_claim is not None:
        where = f"{WORKSPACE_FROM}/{source.goal}"
        volumes.append({"name": "workspace-from",
                        "persistentVolumeClaim": {"claimName": source_claim, "readOnly": True}})
        mounts.append({"name": "workspace-from", "mountPath": where, "readOnly": True})
        env += [{"name": Env.WORKSPACE_FROM, "value": where}, {"name": Env.WORKSPACE_FROM_MODE, "value": source.mode}]
    return volumes, mounts, env


@dataclass(frozen=True)
class WorkspaceState:
    """What the goal's status says of its workspace, and whether a pod may start."""

    status: dict[str, Any] | None           # status.workspace
    condition: tuple[str, bool, str, str] | None  # WorkspaceReady
    blocked: str | None = None              # why no pod can ever start (the goal fails)


def workspace_state(goal: Goal, agent: Agent, claim: Mapping[str, Any] | None,
                    source: Mapping[str, Any] | None) -> WorkspaceState:
    """Decide status.workspace and the WorkspaceReady condition from the goal's claim and the
    dependency's claim (spec.workspaceFrom), as the caches show them."""
    ref = goal.spec.workspace_from
    source_name = claim_name(ref.goal) if ref else None
    if ref is not None and source is None:
        msg = (f"Goal {goal.namespace}/{goal.name}: spec.workspaceFrom.goal {ref.goal!r} has no workspace claim "
               f"{source_name} (its Agent has no spec.workspace, or the claim was deleted): its files are gone; "
               f"give that goal's Agent spec.workspace and run it again, or remove spec.workspaceFrom")
        return WorkspaceState(None, ("WorkspaceReady", False, "SourceClaimMissing", msg), msg)
    if agent.spec.workspace is None:
        status = {"sourceClaim": source_name} if source_name else None
        return WorkspaceState(status, None)
    name = claim_name(goal.name)
    phase = ((claim or {}).get("status") or {}).get("phase") or "Pending"
    status = {"claimName": name, "claimPhase": phase, **({"sourceClaim": source_name} if source_name else {})}
    if phase == "Bound":
        return WorkspaceState(status, ("WorkspaceReady", True, "ClaimBound", f"PersistentVolumeClaim {name} is Bound"))
    if phase == "Lost":
        return WorkspaceState(status, ("WorkspaceReady", False, "ClaimLost",
                                       f"PersistentVolumeClaim {name} lost its PersistentVolume: the files are gone"))
    storage_class = agent.spec.workspace.storage_class_name
    why = (f"StorageClass {storage_class!r}" if storage_class is not None else "the default StorageClass")
    return WorkspaceState(status, ("WorkspaceReady", False, "ClaimPending",
                                   f"PersistentVolumeClaim {name} is Pending: no PersistentVolume bound yet; check "
                                   f"{why} (kubectl describe pvc {name})"))
