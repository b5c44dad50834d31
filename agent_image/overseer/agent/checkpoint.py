"""Where a goal's run stands, and what the loop needs from a store that keeps it.

Two stores keep checkpoints: a file in the workspace (checkpoint_file.FileCheckpoints) and the
PostgreSQL knowledge base (knowledge.GoalCheckpoints). The loop and both stores import this
module; none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass
class Checkpoint:
    """Where a goal's run stands: its whole conversation and the loop's state."""

    messages: list[dict[str, Any]]
    todos: Any
    counters: dict[str, Any]
    iteration: int
    goal_uid: str = ""
    updated_at: datetime | None = None
    """When it was saved, where the store knows (the knowledge base does)."""


class WorkspaceFull(Exception):
    """A checkpoint could not be written for want of space in the goal's workspace. The store
    leaves its last checkpoint as it was; the message names the workspace and the bytes free."""


class Checkpoints(Protocol):
    """A goal's checkpoint store, as the loop uses it."""

    async def load(self) -> Checkpoint | None: ...

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        """Append the new messages and replace the state. False: the store's conversation is not
        the loop's (a write it rejected), and it wants the whole one by `replace`."""
        ...

    async def replace(self, messages: list[dict[str, Any]]) -> None: ...
