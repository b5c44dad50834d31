"""Shows the knowledge base's queued writes where a person looks: the goal's
status.knowledgeBacklog (which the operator sums up in the Agent's KnowledgeBase condition) and an
Event on the Goal when they start to wait, when the reason changes, and once they are stored.

The agent's ServiceAccount may report in its goal's status and create events, nothing more
(docs/security.md); the knowledge base calls `BacklogReporter` synchronously, so the writes to the
API server happen in a task of its own, latest state first, and never hold up a checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from overseer.api import API_VERSION
from overseer.kube import Kube, now_iso, path

from .goal_link import GoalLink
from .knowledge.backlog import DISK_FULL, Backlog

logger = logging.getLogger(__name__)

COMPONENT = "overseer-agent"


class BacklogReporter:
    def __init__(self, kube: Kube, link: GoalLink, goal: dict[str, Any]) -> None:
        self.kube, self.link, self.goal = kube, link, goal
        self._latest: Backlog | None = None
        self._shown: Backlog | None = None  # as the last Event told it
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, backlog: Backlog | None) -> None:
        self._latest = backlog
        self._dirty.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._deliver(), name="knowledge-backlog")

    async def stop(self) -> None:
        """Deliver what is left (briefly), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            self._task.cancel()

    async def _deliver(self) -> None:
        while self._dirty.is_set():
            self._dirty.clear()
            backlog = self._latest
            try:
                await self.link.report(knowledgeBacklog=backlog.to_status() if backlog is not None else None)
            except Exception as e:  # noqa: BLE001 - the link writes the latest state again with its next write
                logger.warning("knowledge backlog not reported in the goal's status: %s", e)
            before = self._shown
            if (before is None) != (backlog is None) or (before and backlog and before.reason != backlog.reason):
                self._shown = backlog
                await self._event(before, backlog)

    async def _event(self, before: Backlog | None, now: Backlog | None) -> None:
        if now is None:
            assert before is not None
            type_, reason = "Normal", "KnowledgeBaseWritesStored"
            message = f"the knowledge-base writes held since {before.since} ({before.reason}) are stored"
        else:
            type_ = "Warning"
            reason = "KnowledgeBaseDiskFull" if now.reason == DISK_FULL else "KnowledgeBaseUnavailable"
            message = now.message
        meta = self.goal.get("metadata") or {}
        stamp = now_iso()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta.get('name', 'goal')[:230]}.{time.time_ns():x}",
                             "namespace": meta.get("namespace")},
                "involvedObject": {"apiVersion": API_VERSION, "kind": "Goal", "name": meta.get("name"),
                                   "namespace": meta.get("namespace"), "uid": meta.get("uid")},
                "type": type_, "reason": reason, "message": message,
                "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                "reportingInstance": COMPONENT, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
        try:
            await self.kube.create(path("v1", "events", meta.get("namespace")), body)
        except Exception as e:  # noqa: BLE001 - the status field says it too; an Event lost is not retried
            logger.warning("event %s on goal %s not created: %s", reason, meta.get("name"), e)
