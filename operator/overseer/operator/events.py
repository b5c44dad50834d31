"""Kubernetes Events, posted beside the reconcile rather than in it, and kept in proportion.

A reconcile records an Event and goes on; a few workers post them while no reconcile waits
for the API server's attention. Under a burst the writes that do the work (pods, status) go
first and Events follow, as with client-go's recorder, which also posts asynchronously.

As client-go's EventCorrelator does, the recorder keeps Events from costing a write each:
- the same event on the same object again is one Event whose count grows (a series), and a
  growing count is written at most once per SERIES_FLUSH seconds, not once per occurrence;
- each object has a token bucket (client-go's spam filter: 25 at once, one more every five
  minutes), so one object that keeps flapping cannot flood its namespace;
- a burst of one reason among the goals of one Agent (past FOLD_BURST, e.g. a thousand Goals
  applied at once, all Dispatched) folds into one Event on that Agent that counts the goals
  and names the first and the latest, as client-go's aggregator combines similar events.
  `kubectl events` and `kubectl describe agent` show the burst on one line; each goal's
  conditions still carry its own transition and when it happened.
Events are for people reading `kubectl describe`: one lost in a crash costs nothing that the
object's status does not also say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import Counter

from overseer.kube import ApiError, Kube, now_iso, path

from .conditions import shorten

logger = logging.getLogger(__name__)

DROPPED = Counter("overseer_events_dropped_total", "Events not posted because too many were waiting")
FILTERED = Counter("overseer_events_filtered_total",
                   "Events not posted because their object had used up its share (spam filter)")
FOLDED = Counter("overseer_events_folded_total", "Goal events counted in their Agent's burst Event instead")

SERIES_WINDOW = 600.0  # an identical event within this long counts in the same Event (client-go: 10 min)
SERIES_FLUSH = 5.0  # a growing Event's count is written at most this often
SPAM_BURST, SPAM_REFILL_SECONDS = 25, 300.0  # per object, client-go's defaults
FOLD_BURST, FOLD_REFILL_SECONDS = 10, 10.0  # per (Agent, type, reason): own Events, then folded
CACHE_ENTRIES = 4096  # series and buckets remembered (client-go's LRU size)

Raw = dict[str, Any]


def event_name(involved: str) -> str:
    """Named as client-go names Events (object name, a dot, the time in hex): a later count update
    needs no answer from the create. Cut to fit the 253 characters of a name."""
    stamp = f".{time.time_ns():x}"
    return involved[:253 - len(stamp)] + stamp


def event_body(obj: Raw, type_: str, reason: str, message: str, component: str) -> Raw:
    meta = obj.get("metadata", {})
    ts = now_iso()
    name = meta.get("name", "object")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(name), "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": name,
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        },
        "type": type_, "reason": reason, "message": shorten(message),
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    }


def _object_key(obj: Raw) -> Hashable:
    meta = obj.get("metadata", {})
    return meta.get("uid") or (obj.get("kind"), meta.get("namespace"), meta.get("name"))


class TokenBucket:
    def __init__(self, burst: int, refill_seconds: float, now: float) -> None:
        self.burst, self.refill_seconds = burst, refill_seconds
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) / self.refill_seconds)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(eq=False)
class Series:
    """One Event as it should read, and what the API server has of it."""

    body: Raw
    seen: float  # when it last occurred (monotonic)
    created: bool = False  # posted
    written: float = float("-inf")  # when it was last written (monotonic)
    dirty: bool = True  # changed since it was last written
    queued: bool = False  # waiting for a worker, or for its next flush
    folded: list[str] = field(default_factory=list)  # for a burst Event: the first and the latest goal


class _Lru(OrderedDict[Hashable, Any]):
    def remember(self, key: Hashable, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > CACHE_ENTRIES:
            self.popitem(last=False)


class EventRecorder:
    def __init__(self, kube: Kube, workers: int = 2, limit: int = 10_000,
                 busy: Callable[[], bool] = lambda: False, yield_seconds: float = 0.25, hold_seconds: float = 5.0,
                 fold_into: Callable[[Raw], Raw | None] = lambda obj: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.busy = busy  # whether reconciles are waiting: events then hold back
        # How often a held-back event looks again, and for how long at most. Each look is a timer
        # and a wake-up of the loop: at 20 a second per worker they were 2% of a burst's CPU.
        self.yield_seconds, self.hold_seconds = yield_seconds, hold_seconds
        self.fold_into = fold_into  # the object a burst of obj's events folds into (a goal's Agent), or None
        self.clock = clock
        self.flush_seconds = SERIES_FLUSH
        self._queue: asyncio.Queue[Series] = asyncio.Queue(limit)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._later: dict[Series, asyncio.TimerHandle] = {}
        self._series: _Lru = _Lru()
        self._spam: _Lru = _Lru()
        self._fold: _Lru = _Lru()

    def record(self, obj: Raw, type_: str, reason: str, message: str) -> None:
        """Count an Event on obj (shown by kubectl describe) and have it written; never blocks or raises."""
        now = self.clock()
        okey = _object_key(obj)
        bucket = self._spam.get(okey) or TokenBucket(SPAM_BURST, SPAM_REFILL_SECONDS, now)
        self._spam.remember(okey, bucket)
        if not bucket.take(now):
            FILTERED.inc()
            return
        owner = self.fold_into(obj)
        if owner is not None:
            fkey = (_object_key(owner), type_, reason)
            fold = self._fold.get(fkey) or TokenBucket(FOLD_BURST, FOLD_REFILL_SECONDS, now)
            self._fold.remember(fkey, fold)
            if not fold.take(now):
                FOLDED.inc()
                self._count(("fold", *fkey), owner, type_, reason, now,
                            lambda s: self._fold_message(s, obj, reason, message))
                return
        self._count((okey, type_, reason, message), obj, type_, reason, now, lambda s: message)

    def _count(self, key: Hashable, obj: Raw, type_: str, reason: str, now: float,
               describe: Callable[[Series], str]) -> None:
        series = self._series.get(key)
        if series is None or now - series.seen > SERIES_WINDOW:
            series = Series(event_body(obj, type_, reason, "", self.kube.field_manager), now)
        else:
            series.body["count"] += 1
            series.body["lastTimestamp"] = now_iso()
        series.seen = now
        series.body["message"] = describe(series)[:1024]
        self._series.remember(key, series)
        series.dirty = True
        self._enqueue(series)

    @staticmethod
    def _fold_message(series: Series, obj: Raw, reason: str, message: str) -> str:
        name = obj.get("metadata", {}).get("name", "")
        series.folded = (series.folded or [name])[:1] + [name]
        first, latest = series.folded[0], series.folded[-1]
        kind = str(obj.get("kind") or "object").lower()
        count = series.body["count"]
        span = first if count == 1 else f"{first} … {latest}"
        return (f"{reason} for {count} {kind}s of this agent in a burst ({span}; each {kind}'s conditions say "
                f"when); latest, {kind} {latest}: {message}")

    def _enqueue(self, series: Series) -> None:
        if series.queued:
            return
        try:
            self._queue.put_nowait(series)
        except asyncio.QueueFull:
            DROPPED.inc()
            logger.warning("too many events waiting; dropped %s on %s", series.body["reason"],
                           series.body["involvedObject"]["name"])
            return
        series.queued = True

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"events-{i}") for i in range(self._workers)]

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is still waiting (for at most timeout seconds), then stop."""
        self.busy = lambda: False
        self.flush_seconds = 0.0
        for series, handle in list(self._later.items()):
            handle.cancel()
            self._again(series)
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            logger.warning("%d events not posted at shutdown", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _again(self, series: Series) -> None:
        self._later.pop(series, None)
        series.queued = False
        self._enqueue(series)

    async def _work(self) -> None:
        while True:
            series = await self._queue.get()
            try:
                wait = series.written + self.flush_seconds - self.clock()
                if wait > 0:  # written a moment ago: the count waits for the next flush
                    self._later[series] = asyncio.get_running_loop().call_later(wait, self._again, series)
                    continue
                # Hold back while there is reconciling to do, but not forever: an event waits at most
                # a few seconds however busy the operator is.
                for _ in range(max(1, round(self.hold_seconds / self.yield_seconds))):
                    if not self.busy():
                        break
                    await asyncio.sleep(self.yield_seconds)
                series.queued = False
                await self._write(series)
            finally:
                self._queue.task_done()

    async def _write(self, series: Series) -> None:
        body = series.body
        ns = body["metadata"]["namespace"]
        series.dirty, series.written = False, self.clock()
        try:
            if series.created:
                try:
                    await self.kube.request(
                        "PATCH", path("v1", "events", ns, body["metadata"]["name"]),
                        body={k: body[k] for k in ("count", "lastTimestamp", "message")},
                        content_type="application/merge-patch+json", answer=False)
                    return
                except ApiError as e:
                    if e.status != 404:
                        raise
                    # Expired (the API server keeps Events an hour): the series goes on in a new one.
                    body["metadata"]["name"] = event_name(body["involvedObject"]["name"])
            await self.kube.request("POST", path("v1", "events", ns), body=body, answer=False)
            series.created = True
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as e:
            obj = body["involvedObject"]
            logger.warning("could not record event %s on %s/%s: %s", body["reason"], obj["namespace"],
                           obj["name"], e)
        finally:
            if series.dirty:  # counted again while this write was on its way
                self._enqueue(series)
