"""Checkpoints in the goal's workspace, for agents without the PostgreSQL knowledge base.

Messages are appended to a JSON-lines file (a save writes only what is new); todos and
counters go to a small state file replaced atomically. A replaced pod that keeps the
workspace (a PersistentVolume) resumes from it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, WorkspaceFull


class FileCheckpoints:
    def __init__(self, workspace: Path, goal_uid: str) -> None:
        # Per goal uid: goals may share a workspace, and a re-created goal starts afresh.
        self.workspace = workspace
        self.dir = workspace / ".overseer" / "checkpoints" / goal_uid
        self.messages_path = self.dir / "messages.jsonl"
        self.state_path = self.dir / "state.json"
        self._count: int | None = None  # messages on file that a state write vouches for

    async def load(self) -> Checkpoint | None:
        if not self.state_path.exists():
            return None
        state = json.loads(self.state_path.read_text())
        lines: list[str] = []
        if self.messages_path.exists():
            with open(self.messages_path) as f:
                lines = [line for line in f if line.strip()]
        # Messages appended after the last state write belong to an unfinished save (the last one
        # maybe cut mid-line): dropped unread.
        messages = [json.loads(line) for line in lines[:state["message_count"]]]
        return Checkpoint(messages=messages, todos=state["todos"], counters=state["counters"],
                          iteration=state["iteration"])

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        with self._or_full(iteration):
            self.dir.mkdir(parents=True, exist_ok=True)
            if self._count is None:
                self._count = json.loads(self.state_path.read_text())["message_count"] \
                    if self.state_path.exists() else 0
                self._cut_to(self._count)  # lines a crash left behind after the last state write
            size = self.messages_path.stat().st_size if self.messages_path.exists() else 0
            try:
                if new_messages:
                    with open(self.messages_path, "a") as f:
                        f.writelines(json.dumps(m) + "\n" for m in new_messages)
                        f.flush()
                        os.fsync(f.fileno())
                self._write_state({"iteration": iteration, "todos": todos, "counters": counters,
                                   "message_count": self._count + len(new_messages)})
            except OSError:
                # What this save appended is not vouched for: give its space back.
                with contextlib.suppress(OSError):
                    os.truncate(self.messages_path, size)
                raise
            self._count += len(new_messages)
        return True  # its own count is the truth: one writer per workspace and goal

    async def replace(self, messages: list[dict[str, Any]]) -> None:
        with self._or_full(None):
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.messages_path.with_suffix(".tmp")
            try:
                tmp.write_text("".join(json.dumps(m) + "\n" for m in messages))
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {
                "iteration": 0, "todos": {}, "counters": {}}
            os.replace(tmp, self.messages_path)
            self._count = len(messages)
            self._write_state({**state, "message_count": len(messages)})

    def _cut_to(self, count: int) -> None:
        """Truncate the messages file after its first `count` lines (in place: it needs no space)."""
        if not self.messages_path.exists():
            return
        with open(self.messages_path, "rb") as f:
            lines = f.readlines()
        if len(lines) != count:
            os.truncate(self.messages_path, sum(len(line) for line in lines[:count]))

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def _or_full(self, iteration: int | None) -> Iterator[None]:
        """ENOSPC or EDQUOT inside: WorkspaceFull, saying where and how much space is left."""
        try:
            yield
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            usage = shutil.disk_usage(self.workspace)
            which = f"of iteration {iteration}" if iteration is not None else "(compacted)"
            raise WorkspaceFull(
                f"the workspace {self.workspace} is full ({usage.free} bytes free of {usage.total}): the "
                f"checkpoint {which} could not be written, the last one written is kept; free space in it or "
                f"give the Agent a larger spec.workspace.size") from e
