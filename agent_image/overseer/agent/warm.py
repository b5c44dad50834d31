"""A warm pod's wait: started before any goal needs it, with its imports done and its client
logged in, the agent waits for the Goal whose status.pod names its pod (the operator writes that
field when a goal claims the pod, and no agent can write it: admission policy
overseer-agent-confinement). Goal's status.pod is a selectable field, so the API server sends
this pod that one goal's events, not the namespace's."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from overseer.api import API_VERSION
from overseer.kube import Kube, path

logger = logging.getLogger(__name__)

WAITING = "warm pod ready"  # logged once the pod is logged in and waits (the start benchmark reads it)


def claimed_by(goal: dict[str, Any], pod: str, agent: str) -> bool:
    """Whether this goal is claimed by this pod of this agent, as the operator wrote it."""
    status = goal.get("status") or {}
    return status.get("pod") == pod and status.get("agent") == agent and not goal["metadata"].get("deletionTimestamp")


async def wait_for_goal(kube: Kube, namespace: str, pod: str, agent: str) -> str:
    """The name of the goal that claims this pod, once one does."""
    url = path(API_VERSION, "goals", namespace)
    selector = {"fieldSelector": f"status.pod={pod}"}
    backoff, said = 0.5, False
    while True:
        try:
            listed = await kube.get(url, params=selector) or {}
            for goal in listed.get("items") or []:
                if claimed_by(goal, pod, agent):
                    return str(goal["metadata"]["name"])
            if not said:
                logger.info("%s: pod %s is warm, waiting for a goal to claim it", WAITING, pod)
                said = True
            params = {**selector, "resourceVersion": (listed.get("metadata") or {}).get("resourceVersion") or ""}
            async for event in kube.watch(url, params):
                goal = event.get("object") or {}
                if event.get("type") in ("ADDED", "MODIFIED") and claimed_by(goal, pod, agent):
                    return str(goal["metadata"]["name"])
                if event.get("type") == "ERROR":
                    break  # too old a resourceVersion: list again
            backoff = 0.5
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the API server is away for now: list and watch again
            logger.warning("waiting for a goal to claim pod %s: %s", pod, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)
