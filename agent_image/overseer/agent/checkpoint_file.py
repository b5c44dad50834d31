"""Checkpoints in the goal's workspace, for agents without the PostgreSQL knowledge base.

Messages are appended to a JSON-lines file (a save writes only what is new); todos and
counters go to a small state file replaced atomically. A replaced pod that keeps the
workspace (a PersistentVolume) resumes from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint


class FileCheckpoints:
    def __init__(self, workspace: Path, goal_uid: str) -> None:
        # Per goal uid: goals may share a workspace, and a re-created goal starts afresh.
        self.dir = workspace / ".overseer" / "checkpoints" / goal_uid
        self.messages_path = self.dir / "messages.jsonl"
        self.state_path = self.dir / "state.json"
        self._count: int | None = None  # messages on file that a state write vouches for

    async def load(self) -> Checkpoint | None:
        if not self.state_path.exists():
            return None
        state = json.loads(self.state_path.read_text())
        messages: list[dict[str, Any]] = []
        if self.messages_path.exists():
            with open(self.messages_path) as f:
                messages = [json.loads(line) for line in f if line.strip()]
        # Messages appended after the last state write belong to an unfinished save: drop them.
        messages = messages[:state["message_count"]]
        return Checkpoint(messages=messages, todos=state["todos"], counters=state["counters"],
                          iteration=state["iteration"])

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._count is None:
            self._count = json.loads(self.state_path.read_text())["message_count"] if self.state_path.exists() else 0
            if self.messages_path.exists():  # cut lines a crash left behind after the last state write
                with open(self.messages_path) as f:
                    lines = f.readlines()
                if len(lines) != self._count:
                    self.messages_path.write_text("".join(lines[:self._count]))
        count = self._count
        if new_messages:
            with open(self.messages_path, "a") as f:
                f.writelines(json.dumps(m) + "\n" for m in new_messages)
                f.flush()
                os.fsync(f.fileno())
        self._count = count + len(new_messages)
        self._write_state({"iteration": iteration, "todos": todos, "counters": counters,
                           "message_count": self._count})
        return True  # its own count is the truth: one writer per workspace and goal

    async def replace(self, messages: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.messages_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in messages))
        os.replace(tmp, self.messages_path)
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {
            "iteration": 0, "todos": {}, "counters": {}}
        self._count = len(messages)
        self._write_state({**state, "message_count": len(messages)})

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)
