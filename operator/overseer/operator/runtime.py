"""State shared by the reconcilers: the API client, the watch caches and the work queues."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overseer.api import API_VERSION

from overseer.kube import Kube, path
from .settings import Settings
from .workqueue import WorkQueue

Key = tuple[str, str]  # (namespace, name)
Raw = dict[str, Any]


def _values(index: Mapping[Any, Any] | None, key: Any) -> list[Raw]:
    if index is None:
        return []
    store = index.get(key)
    return list(store) if store is not None else []


@dataclass
class Runtime:
    """One per operator process. The indexes are kopf's (kept current by its watches and
    complete before any reconcile runs), so reconcilers never re-read what a watch delivered."""

    kube: Kube
    settings: Settings
    indexes: Mapping[str, Mapping[Any, Any]]
    goals: WorkQueue = field(default_factory=lambda: WorkQueue("goals"))
    agents: WorkQueue = field(default_factory=lambda: WorkQueue("agents"))
    capabilities: WorkQueue = field(default_factory=lambda: WorkQueue("capabilities"))
    # Pods created but not yet seen by the watch, per (namespace, agent): counted as running so
    # a burst of reconciles cannot overshoot maxConcurrentGoals.
    inflight: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    agent_locks: dict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # Our own status writes, by uid: (resourceVersion the write was based on, object it returned).
    # Until the watch catches up, a reconcile sees what it wrote, not the stale copy, and so
    # neither writes nor announces the same transition twice.
    written: dict[str, tuple[str, Raw]] = field(default_factory=dict)

    def _fresh(self, raw: Raw) -> Raw:
        uid = raw.get("metadata", {}).get("uid")
        entry = self.written.get(uid) if uid else None
        if entry is None:
            return raw
        based_on, result = entry
        if raw["metadata"].get("resourceVersion") == based_on:
            return result
        del self.written[uid]  # the watch has caught up
        return raw

    def one(self, index: str, key: Any) -> Raw | None:
        values = _values(self.indexes.get(index), key)
        return self._fresh(values[0]) if values else None

    def many(self, index: str, key: Any) -> list[Raw]:
        return [self._fresh(v) if isinstance(v, dict) else v for v in _values(self.indexes.get(index), key)]

    async def patch_status(self, url: str, raw: Raw, changes: dict[str, Any]) -> bool:
        """Merge-patch only the status fields that differ from the freshest known copy.
        Returns whether anything was written."""
        current = raw.get("status") or {}
        delta = {k: v for k, v in changes.items() if current.get(k) != v}
        if not delta:
            return False
        result = await self.kube.merge_patch(url, {"status": delta})
        uid = raw["metadata"].get("uid")
        if result is not None and uid:
            self.written[uid] = (raw["metadata"].get("resourceVersion"), result)
        return True

    def keys(self, index: str) -> Iterable[Any]:
        return list(self.indexes.get(index, {}).keys())


def goal_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "goals", namespace, name, subresource)


def agent_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "agents", namespace, name, subresource)


def capability_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    return path(API_VERSION, "capabilities", namespace, name, subresource)

