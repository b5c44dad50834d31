"""What the knowledge base stores and hands back: experiences (a finished goal and its steps),
lessons, approval decisions; and how a value is made fit for PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Message = dict[str, Any]
"""An Anthropic Messages API message: {"role": ..., "content": [...]}."""


@dataclass
class Action:
    """One step of a goal: the tool used and a short note on how it went."""

    tool: str
    outcome: str = ""


@dataclass
class Experience:
    """A finished goal, as the knowledge base learns from it."""

    goal_uid: str
    goal_name: str
    namespace: str
    agent: str
    description: str
    success: bool
    outcome: str = ""
    context_summary: str = ""
    actions: list[Action] = field(default_factory=list)
    tokens: int = 0
    duration_seconds: float = 0.0
    error: str | None = None


@dataclass
class Lesson:
    """A pattern worth telling the next goal, as prompt-ready text; `id` goes back to
    `record_lesson_use`."""

    id: int
    kind: str
    text: str
    score: float
    success_count: int
    failure_count: int
    usage_count: int


@dataclass
class Decision:
    """A person's (or a policy's) answer to an approval request."""

    goal_uid: str
    approval_id: str
    kind: str
    summary: str
    decision: str
    decided_by: str
    decided_at: datetime
    reason: str = ""


def action_json(action: Action | Mapping[str, Any] | tuple[str, str] | str) -> dict[str, str]:
    """One step of an experience as stored (tool and outcome), from any of the shapes callers give."""
    if isinstance(action, Action):
        return {"tool": action.tool, "outcome": action.outcome}
    if isinstance(action, Mapping):
        return {"tool": str(action.get("tool", "")), "outcome": str(action.get("outcome", ""))}
    if isinstance(action, str):
        return {"tool": action, "outcome": ""}
    tool, outcome = action
    return {"tool": str(tool), "outcome": str(outcome)}


def clean(value: Any) -> Any:
    """`value` without NUL characters, which PostgreSQL text and jsonb cannot hold (tool
    output sometimes has them)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value

