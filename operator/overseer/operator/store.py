"""The operator's cache of one kind: objects by key, kept current by an informer, with
secondary indexes and running tallies updated as each event arrives.

Reconcilers ask questions like "the live pods of this agent" or "the goal counts of this agent"
on every dispatch; answering them by walking all objects made the cost of a dispatch grow with
the size of the agent's queue. Here each answer costs one dictionary lookup.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

Key = tuple[str, str]  # (namespace, name)
Raw = dict[str, Any]

# raw -> the index keys an object is filed under (none, one or several)
Indexer = Callable[[Raw], Iterable[Hashable]]
# raw -> (tally key, amounts) this object adds to that tally, or None
Tally = Callable[[Raw], "tuple[Hashable, dict[str, int]] | None"]


def key_of(raw: Raw) -> Key:
    meta = raw["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Store:
    def __init__(self, indexers: dict[str, Indexer] | None = None, tallies: dict[str, Tally] | None = None) -> None:
        self._objects: dict[Key, Raw] = {}
        self._indexers = indexers or {}
        self._indexes: dict[str, dict[Hashable, set[Key]]] = {name: defaultdict(set) for name in self._indexers}
        self._filed: dict[Key, dict[str, tuple[Hashable, ...]]] = {}
        self._tally_fns = tallies or {}
        self._tallies: dict[str, dict[Hashable, Counter[str]]] = {name: defaultdict(Counter) for name in self._tally_fns}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def get(self, key: Key) -> Raw | None:
        return self._objects.get(key)

    def keys(self) -> list[Key]:
        return list(self._objects)

    def values(self) -> list[Raw]:
        return list(self._objects.values())

    def upsert(self, raw: Raw) -> Raw | None:
        """Store the object's newest version; return the previous one."""
        key = key_of(raw)
        old = self._objects.get(key)
        if old is not None:
            self._unfile(key, old)
        self._objects[key] = raw
        self._file(key, raw)
        return old

    def delete(self, key: Key) -> Raw | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unfile(key, old)
        return old

    def by(self, index: str, value: Hashable) -> list[Raw]:
        """The objects filed under value in index."""
        keys = self._indexes[index].get(value)
        return [self._objects[k] for k in keys] if keys else []

    def names(self, index: str, value: Hashable) -> set[str]:
        keys = self._indexes[index].get(value)
        return {k[1] for k in keys} if keys else set()

    def count(self, index: str, value: Hashable) -> int:
        keys = self._indexes[index].get(value)
        return len(keys) if keys else 0

    def tally(self, name: str, value: Hashable) -> dict[str, int]:
        """The summed amounts of every object counted under value."""
        return dict(self._tallies[name].get(value) or {})

    def _file(self, key: Key, raw: Raw) -> None:
        filed: dict[str, tuple[Hashable, ...]] = {}
        for name, indexer in self._indexers.items():
            values = tuple(indexer(raw))
            if values:
                filed[name] = values
                index = self._indexes[name]
                for value in values:
                    index[value].add(key)
        if filed:
            self._filed[key] = filed
        for name, fn in self._tally_fns.items():
            entry = fn(raw)
            if entry is not None:
                self._tallies[name][entry[0]].update(entry[1])

    def _unfile(self, key: Key, raw: Raw) -> None:
        for name, values in self._filed.pop(key, {}).items():
            index = self._indexes[name]
            for value in values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
        for name, fn in self._tally_fns.items():
            entry = fn(raw)
            if entry is not None:
                tally = self._tallies[name]
                counter = tally[entry[0]]
                counter.subtract(entry[1])
                if not any(counter.values()):
                    del tally[entry[0]]
