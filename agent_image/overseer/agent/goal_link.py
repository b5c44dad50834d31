"""The agent's link to its Goal object: it follows the Goal's spec and annotations as they
change, and writes its own part of the status with server-side apply.

The agent owns progress fields (iteration, tokens, progress, heartbeat, result, pending
approvals); the operator owns phase and conditions. Server-side apply under the agent's own
field manager keeps the two from overwriting each other. Approvals are read from annotations,
which the agent's ServiceAccount cannot write: it can never approve itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from overseer import approvals
from overseer.api import API_VERSION
from overseer.kube import ApiError, Backoff, Kube, now_iso, path

logger = logging.getLogger(__name__)

FIELD_MANAGER = "overseer-agent"


class GoalLink:
    def __init__(self, kube: Kube, namespace: str, name: str, heartbeat_seconds: float = 10.0,
                 min_write_interval: float = 1.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.goal: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self._state: dict[str, Any] = {}
        self._heartbeat_seconds = heartbeat_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()
        self._version = 0                 # bumped by every report()
        self._applied = 0                 # the version last written
        self._dirty = asyncio.Event()
        self._progress = asyncio.Condition()
        self._min_write_interval = min_write_interval
        self._last_write = -math.inf
        self._flushing = 0                # flush() calls waiting: they skip the pause between writes
        self._hurry = asyncio.Event()

    @property
    def url(self) -> str:
        return path(API_VERSION, "goals", self.namespace, self.name)

    async def load(self) -> dict[str, Any]:
        goal = await self.kube.get(self.url)
        if goal is None:
            raise LookupError(f"Goal {self.namespace}/{self.name} does not exist")
        self.goal = goal
        return goal

    def start(self) -> None:
        """Follow the Goal and keep the heartbeat fresh until stop()."""
        self._tasks = [asyncio.create_task(self._follow(), name="goal-watch"),
                       asyncio.create_task(self._heartbeat(), name="heartbeat"),
                       asyncio.create_task(self._writer(), name="status-writer")]

    async def stop(self) -> None:
        if self._tasks:
            await self.flush(timeout=10)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- reading ------------------------------------------------------------------------

    @property
    def annotations(self) -> dict[str, str]:
        return self.goal.get("metadata", {}).get("annotations") or {}

    @property
    def cancelled(self) -> bool:
        return bool((self.goal.get("spec") or {}).get("cancel")) or bool(
            self.goal.get("metadata", {}).get("deletionTimestamp"))

    def decision(self, approval_id: str) -> tuple[str, str] | None:
        """("approved"|"denied", reason) once a person has decided on approval_id."""
        return approvals.decision(self.goal, approval_id)

    def decided_by(self, approval_id: str) -> tuple[str, str]:
        """(who, when) set the annotation that decided approval_id."""
        verdict = self.decision(approval_id)
        key = approvals.APPROVE if verdict and verdict[0] == "approved" else approvals.DENY
        return approvals.decided_by(self.goal, key)

    async def wait_until(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait for a change of the Goal after which predicate() is truthy; return its value."""
        async def waiting() -> Any:
            while True:
                value = predicate()
                if value:
                    return value
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(waiting(), timeout)

    async def _follow(self) -> None:
        backoff = Backoff(cap=10)
        while True:
            try:
                rv = (self.goal.get("metadata") or {}).get("resourceVersion")
                params = {"fieldSelector": f"metadata.name={self.name}"}
                if rv:
                    params["resourceVersion"] = rv
                async for event in self.kube.watch(path(API_VERSION, "goals", self.namespace), params):
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self.goal = event["object"]
                        self.changed.set()
                    elif event.get("type") == "DELETED":
                        self.goal.setdefault("metadata", {})["deletionTimestamp"] = now_iso()
                        self.changed.set()
                    elif event.get("type") == "ERROR":  # resourceVersion too old: read afresh
                        await self.load()
                        self.changed.set()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the watch is re-established
                logger.debug("goal watch ended: %s", e)
                await asyncio.sleep(backoff.next())
                with contextlib.suppress(Exception):
                    await self.load()
                    self.changed.set()

    # ---- writing ------------------------------------------------------------------------

    async def report(self, **fields: Any) -> None:
        """Set agent-owned status fields (camelCase). A background writer applies the latest
        state, at most once every `min_write_interval` seconds, so the loop never waits on the
        API server and a fast loop does not load it with a write per report; flush() writes at
        once and waits for it."""
        self._state.update(fields)
        self._version += 1
        if not self._tasks:  # not started (tests, early failures): write now
            await self._apply()
            self._applied = self._version
            return
        self._dirty.set()

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait (up to timeout) until everything reported so far is written."""
        target = self._version

        async def written() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self._applied >= target)
        self._flushing += 1
        self._hurry.set()
        try:
            await asyncio.wait_for(written(), timeout)
            return True
        except asyncio.TimeoutError:
            logger.warning("status writes still pending after %.0fs", timeout)
            return False
        finally:
            self._flushing -= 1

    async def _writer(self) -> None:
        backoff = Backoff(cap=10)
        while True:
            await self._dirty.wait()
            pause = self._last_write + self._min_write_interval - time.monotonic()
            if pause > 0 and not self._flushing:  # reports made meanwhile go out in one write
                self._hurry.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), pause)
            self._dirty.clear()
            version = self._version
            try:
                # Always the whole agent-owned set: with server-side apply, a field left out is given up.
                await self._apply()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - written again after a pause
                logger.warning("status not written (retrying): %s", e)
                await asyncio.sleep(backoff.next())
                self._dirty.set()
                continue
            backoff.reset()
            self._last_write = time.monotonic()
            async with self._progress:
                self._applied = version
                self._progress.notify_all()

    async def _apply(self) -> None:
        async with self._write_lock:
            body = {"apiVersion": API_VERSION, "kind": "Goal",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    # None means "not mine any more": left out, server-side apply drops the field.
                    "status": {**{k: v for k, v in self._state.items() if v is not None}, "heartbeat": now_iso()}}
            try:
                await self.kube.request(
                    "PATCH", self.url + "/status", body=body, content_type="application/apply-patch+yaml",
                    params={"fieldManager": FIELD_MANAGER, "force": "true"})
            except ApiError as e:
                if e.status == 404:
                    raise LookupError(f"Goal {self.namespace}/{self.name} is gone") from e
                raise

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                await self._apply()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a missed heartbeat is retried next time
                logger.warning("heartbeat not written: %s", e)
