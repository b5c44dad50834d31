"""Writes waiting for PostgreSQL: the queue's entries, how checkpoints of one goal merge while
they wait, and the local spool file that keeps them across a crash of the agent process."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Write:
    """One queued write; `id` makes its replay idempotent."""

    op: str
    args: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "op": self.op, "args": self.args}, default=str)


def is_checkpoint_of(write: Write, goal_uid: str) -> bool:
    return write.op in ("checkpoint", "drop_checkpoint") and write.args["goal_uid"] == goal_uid


def enqueue(queue: deque[Write], write: Write) -> None:
    """Queue a write; a checkpoint merges into the goal's checkpoint already waiting, and a drop
    takes the goal's waiting checkpoints with it."""
    if write.op in ("checkpoint", "drop_checkpoint"):
        goal = write.args["goal_uid"]
        if write.op == "drop_checkpoint":
            kept = [w for w in queue if not is_checkpoint_of(w, goal)]
            queue.clear()
            queue.extend(kept)
        else:
            last = next((w for w in reversed(queue) if is_checkpoint_of(w, goal)), None)
            if last is not None and last.op == "checkpoint":
                new, old = write.args, last.args
                if new["replace"]:
                    old.update(replace=True, base=None, messages=new["messages"])
                else:
                    old["messages"] = old["messages"] + new["messages"]
                if new["state"] is not None:
                    old["state"] = new["state"]
                last.id = write.id
                return
    queue.append(write)


class Spool:
    """A local file of the writes still queued, one JSON line each (None: no file). Local file
    writes are small appends, made only during outages: cheap enough for the loop."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None

    def load(self, namespace: str, ops: Collection[str]) -> list[Write]:
        """The writes an earlier process left behind; unreadable lines are skipped."""
        if self.path is None or not self.path.exists():
            return []
        writes = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                write = Write(data["op"], data["args"], data["id"])
                if write.op not in ops or not isinstance(write.args, dict):
                    raise ValueError(write.op)
                write.args.setdefault("namespace", namespace)  # spooled before namespaces
            except (ValueError, KeyError, TypeError):
                logger.warning("knowledge base spool %s: skipped an unreadable line", self.path)
                continue
            writes.append(write)
        if writes:
            logger.info("knowledge base: %d writes from spool %s to replay", len(writes), self.path)
        return writes

    def append(self, write: Write) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(write.to_json() + "\n")

    def rewrite(self, writes: Iterable[Write]) -> None:
        """Leave only `writes` in the file (atomically); none: no file."""
        if self.path is None:
            return
        text = "".join(w.to_json() + "\n" for w in writes)
        if not text:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
