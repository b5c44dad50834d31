"""List, then watch: keeps a Store current with one collection of the API server and tells
the operator what changed, as client-go's informers do.

The objects stay the plain dicts the API server sent. Per event this costs one JSON decode, a
store update and one call of the handler; no framework keeps copies or diffs it does not need.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from overseer.kube import ApiError, Backoff, Kube, path

from .metrics import RELISTS, WATCH_ERRORS
from .store import Key, Raw, Store, key_of

logger = logging.getLogger(__name__)

# handler(event, newest, previous): event is ADDED, MODIFIED or DELETED; for DELETED newest is
# the last state seen; previous is None for ADDED.
Handler = Callable[[str, Raw, "Raw | None"], None]

PAGE_SIZE = 500
WATCH_SECONDS = (240, 300)  # the server ends each watch in this range: spread the reconnects
MAX_BACKOFF = 30.0
COME_BACK_LATER = {429, 503}  # statuses of an API server starting up or shedding load


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Informer:
    def __init__(self, kube: Kube, api_version: str, plural: str, store: Store, handler: Handler, *,
                 namespace: str | None = None, label_selector: str | None = None,
                 accept: Callable[[str], bool] | None = None,
                 transform: Callable[[Raw], Raw] | None = None) -> None:
        self.kube = kube
        self.api_version, self.plural = api_version, plural
        self.store, self.handler = store, handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.accept = accept  # namespace filter for a cluster-wide watch (namespace globs)
        self.transform = transform  # what of each object is worth keeping in memory
        self.synced = asyncio.Event()  # the first listing is in the store
        self.version = ""  # of the newest event seen: where a dropped watch resumes
        # When a list, a watch or an error last came back: a working informer does so at least
        # once per watch, however quiet the cluster (the health probe reads it).
        self.last_progress = time.monotonic()
        self.last_error = ""  # of the last failed list or watch, until one succeeds
        self._relists, self._errors = RELISTS.labels(plural), WATCH_ERRORS.labels(plural)

    def __repr__(self) -> str:
        where = self.namespace or "all namespaces"
        return f"Informer({self.plural} in {where}{', ' + self.label_selector if self.label_selector else ''})"

    @property
    def url(self) -> str:
        return path(self.api_version, self.plural, self.namespace)

    def _mine(self, key: Key) -> bool:
        return self.namespace is None or key[0] == self.namespace

    def _wanted(self, raw: Raw) -> bool:
        return self.accept is None or self.accept(raw["metadata"].get("namespace") or "")

    async def run(self) -> None:
        """List and watch until cancelled; errors are logged and retried with backoff."""
        backoff = Backoff(cap=MAX_BACKOFF)
        while True:
            try:
                await self.relist()
                backoff.reset()
                while True:
                    try:
                        await self.watch()
                        self._progress()
                        backoff.reset()
                    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                        self._progress(f"watch interrupted: {e or type(e).__name__}")
                        self._errors.inc()
                        logger.info("%s: watch interrupted (%s); resuming from %s", self, e, self.version)
                        await asyncio.sleep(backoff.next())
                    except ApiError as e:
                        if e.status not in COME_BACK_LATER:
                            raise
                        # A starting or overloaded API server: watch again from the same version when
                        # it asks; listing again would be the heaviest request it could get now.
                        self._progress(str(e))
                        self._errors.inc()
                        delay = max(backoff.next(), e.retry_after or 0.0)
                        logger.info("%s: watch refused (%s %s); watching again in %.1fs", self, e.status, e.reason,
                                    delay)
                        await asyncio.sleep(delay)
            except Expired:
                self._progress()
                logger.info("%s: resourceVersion expired; listing again", self)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep the cache alive through any API trouble
                self._progress(str(e))
                self._errors.inc()
                delay = max(backoff.next(), getattr(e, "retry_after", None) or 0.0)
                logger.warning("%s: %s; listing again in %.1fs", self, e, delay)
                await asyncio.sleep(delay)

    async def relist(self) -> None:
        """Read the whole collection into the store and report what changed. Each page goes into
        the store before the next is asked for: ten thousand goal pods parsed at once, before any
        transform slimmed them, made the operator's peak memory after each restart."""
        self._relists.inc()
        params: dict[str, str] = {"limit": str(PAGE_SIZE)}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        seen: set[Key] = set()
        while True:
            page = await self.kube.request("GET", self.url, params=params)
            kind = (page.get("kind") or "").removesuffix("List")
            items: list[Any] = page.pop("items", None) or []
            for i, raw in enumerate(items):
                items[i] = None  # the page lets go of each object as it goes into the store
                if not self._wanted(raw):
                    continue
                # List items lack these; Events and owner references need them.
                raw.setdefault("apiVersion", self.api_version)
                raw.setdefault("kind", kind)
                seen.add(key_of(raw))
                self._apply("ADDED", raw)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params["continue"] = meta["continue"]
        for key in [k for k in self.store.keys() if self._mine(k) and k not in seen]:
            old = self.store.delete(key)
            if old is not None:
                self.handler("DELETED", old, old)
        self.version = meta["resourceVersion"]
        self._progress()
        self.synced.set()

    async def watch(self) -> None:
        """Follow changes from self.version until the server ends the stream."""
        params = {"resourceVersion": self.version, "timeoutSeconds": str(random.randint(*WATCH_SECONDS))}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        async for event in self.kube.watch(self.url, params):
            kind, raw = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if raw.get("code") == 410:
                    raise Expired()
                raise ApiError(int(raw.get("code") or 500), raw.get("reason", ""), raw.get("message", ""),
                               "WATCH", self.url)
            if kind != "BOOKMARK" and self._wanted(raw):
                self._apply(kind, raw)
            self.version = (raw.get("metadata") or {}).get("resourceVersion") or self.version
            self.last_progress = time.monotonic()

    def _progress(self, error: str = "") -> None:
        self.last_progress = time.monotonic()
        self.last_error = error

    def _apply(self, kind: str | None, raw: Raw) -> None:
        if self.transform is not None:
            raw = self.transform(raw)
        if kind == "DELETED":
            old = self.store.delete(key_of(raw))
            self.handler("DELETED", raw, old)
            return
        old = self.store.upsert(raw)
        if old is not None and old["metadata"].get("resourceVersion") == raw["metadata"].get("resourceVersion"):
            return  # a relist found it unchanged
        self.handler("ADDED" if old is None else "MODIFIED", raw, old)
