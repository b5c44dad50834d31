"""Kubernetes Events, posted beside the reconcile rather than in it.

A reconcile records an Event and goes on; a few workers post them while no reconcile waits
for the API server's attention. Under a burst the writes that do the work (pods, status) go
first and Events follow, as with client-go's recorder, which also posts asynchronously.
Events are for people reading `kubectl describe`: one lost in a crash costs nothing that the
object's status does not also say.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client import Counter

from overseer.kube import ApiError, Kube, now_iso, path

logger = logging.getLogger(__name__)

DROPPED = Counter("overseer_events_dropped_total", "Events not posted because too many were waiting")


def event_body(obj: dict[str, Any], type_: str, reason: str, message: str, component: str) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    ts = now_iso()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        },
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    }


class EventRecorder:
    def __init__(self, kube: Kube, workers: int = 2, limit: int = 10_000,
                 busy: Callable[[], bool] = lambda: False, yield_seconds: float = 0.05) -> None:
        self.kube = kube
        self.busy = busy  # whether reconciles are waiting: events then hold back
        self.yield_seconds = yield_seconds
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limit)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event on obj (shown by kubectl describe); never blocks or raises."""
        body = event_body(obj, type_, reason, message, self.kube.field_manager)
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            DROPPED.inc()
            logger.warning("too many events waiting; dropped %s on %s", reason, body["involvedObject"]["name"])

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"events-{i}") for i in range(self._workers)]

    async def stop(self, timeout: float = 5.0) -> None:
        """Post what is still waiting (for at most timeout seconds), then stop."""
        self.busy = lambda: False
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            logger.warning("%d events not posted at shutdown", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            body = await self._queue.get()
            # Hold back while there is reconciling to do, but not forever: an event waits at most
            # a few seconds however busy the operator is.
            for _ in range(100):
                if not self.busy():
                    break
                await asyncio.sleep(self.yield_seconds)
            try:
                await self.kube.request("POST", path("v1", "events", body["metadata"]["namespace"]), body=body)
            except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as e:
                obj = body["involvedObject"]
                logger.warning("could not record event %s on %s/%s: %s", body["reason"], obj["namespace"],
                               obj["name"], e)
            finally:
                self._queue.task_done()
