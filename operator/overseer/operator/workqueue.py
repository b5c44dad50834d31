"""A work queue of object keys, as controller-runtime has: level-triggered reconciliation.

A key waits in the queue at most once, is never reconciled by two workers at once, and a
key added while it is being reconciled runs again afterwards. Failures back off per key.
Each queue exports client-go's work-queue metrics under its name (metrics.QUEUE_*).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

from . import metrics

logger = logging.getLogger(__name__)

# reconcile(key) returns seconds until it wants to look at the key again, or None.
Reconcile = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(self, name: str, *, max_backoff: float = 300.0) -> None:
        self.name = name
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._max_backoff = max_backoff
        self._tasks: list[asyncio.Task[None]] = []
        self._added: dict[Hashable, float] = {}  # when each queued key was added
        self._started: dict[Hashable, float] = {}  # when each active key's reconcile began
        self._adds, self._depth = metrics.QUEUE_ADDS.labels(name), metrics.QUEUE_DEPTH.labels(name)
        self._waited, self._worked = metrics.QUEUE_SECONDS.labels(name), metrics.WORK_SECONDS.labels(name)
        self._retries = metrics.QUEUE_RETRIES.labels(name)
        metrics.LONGEST_RUNNING.labels(name).set_function(self._longest_running)
        metrics.UNFINISHED.labels(name).set_function(self._unfinished)

    def _longest_running(self) -> float:
        now = time.monotonic()
        return now - min(self._started.values(), default=now)

    def _unfinished(self) -> float:
        now = time.monotonic()
        return sum(now - started for started in self._started.values())

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: Hashable) -> None:
        if key in self._queued:
            return
        if key in self._active:
            if key not in self._dirty:
                self._dirty.add(key)
                self._adds.inc()
            return
        self._queued.add(key)
        self._added[key] = time.monotonic()
        self._queue.put_nowait(key)
        self._adds.inc()
        self._depth.set(len(self._queued))

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add the key after delay seconds; an earlier pending add wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = time.monotonic() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_later(delay, self._fire, key))

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self, reconcile: Reconcile, workers: int) -> None:
        for i in range(workers):
            self._tasks.append(asyncio.create_task(self._work(reconcile), name=f"{self.name}-worker-{i}"))

    async def stop(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _work(self, reconcile: Reconcile) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = self._started[key] = time.monotonic()
            self._waited.observe(started - self._added.pop(key, started))
            self._depth.set(len(self._queued))
            try:
                again = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried with backoff
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._max_backoff, 0.5 * 2 ** min(failures, 12))
                logger.warning("%s %s: reconcile failed (attempt %d), retrying in %.1fs: %s",
                               self.name, key, failures, delay, e)
                again = delay
                self._retries.inc()
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
                self._worked.observe(time.monotonic() - self._started.pop(key))
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add_after(key, again)
