"""The agent's TODO list and the `todo` tool that replaces it.

The model sends the whole list on every call, each item with its status; there are no
ids or partial operations to get wrong. The loop owns the `TodoList`, shows `render()`
to the model after tool calls, reports `summary()` in the Goal's status and stores
`to_dict()` in checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from .base import Tool, ToolContext, ToolError, ToolResult

Status = Literal["pending", "in_progress", "done"]
STATUSES: tuple[Status, ...] = ("pending", "in_progress", "done")
MAX_ITEMS = 100
MAX_TEXT = 500
_MARKS: dict[Status, str] = {"pending": "[ ]", "in_progress": "[~]", "done": "[x]"}


@dataclass
class TodoItem:
    text: str
    status: Status = "pending"


class TodoList:
    """The steps the agent has planned, in order, each pending, in progress or done."""

    def __init__(self, items: list[TodoItem] | None = None) -> None:
        self.items: list[TodoItem] = list(items or [])

    def __iter__(self) -> Iterator[TodoItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def replace(self, items: list[TodoItem]) -> None:
        self.items = list(items)

    @property
    def done(self) -> int:
        return sum(1 for item in self.items if item.status == "done")

    def summary(self) -> str:
        """Done over total, e.g. "3/7"."""
        return f"{self.done}/{len(self.items)}"

    def progress(self, iteration: int) -> str:
        """The goal's status.progress (PROGRESS in `kubectl get goals`): done over total, or the
        iteration while the model keeps no list."""
        return self.summary() if self.items else f"iteration {iteration}"

    def render(self) -> str:
        """The block re-shown to the model after tool calls."""
        if not self.items:
            return "TODO list: empty. Use the todo tool to plan work with several steps."
        lines = [f"TODO list ({self.summary()} done):"]
        lines += [f"{n}. {_MARKS[item.status]} {item.text}" for n, item in enumerate(self.items, 1)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"items": [{"text": item.text, "status": item.status} for item in self.items]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TodoList:
        """A list from `to_dict()` output; unknown statuses read as pending."""
        items = []
        for raw in (data or {}).get("items", []):
            status = raw.get("status", "pending")
            items.append(TodoItem(str(raw.get("text", "")), status if status in STATUSES else "pending"))
        return cls(items)


class TodoTool(Tool):
    name = "todo"
    side_effects = False  # the TODO list is part of every checkpoint
    description = (
        "Keep your TODO list for this goal. Send the complete list every time, in order; it "
        "replaces the previous one. Each item has text and a status: pending, in_progress or "
        "done. Plan multi-step work up front, mark one item in_progress while you work on it, "
        "and mark items done as soon as they are finished. Send an empty list to clear it."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "maxItems": MAX_ITEMS,
                "description": "The whole TODO list, in order.",
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                                 "description": "What the step is, in a few words."},
                        "status": {"type": "string", "enum": list(STATUSES)},
                    },
                    "required": ["text", "status"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["items"],
        "additionalProperties": False,
    }

    def __init__(self, todos: TodoList | None = None) -> None:
        self.todos = todos if todos is not None else TodoList()

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"update TODO list ({len(input.get('items') or [])} items)"

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        items = [TodoItem(raw["text"].strip(), cast(Status, raw["status"])) for raw in input["items"]]
        if any(not item.text for item in items):
            raise ToolError("every TODO item needs text")
        self.todos.replace(items)
        note = ""
        if sum(1 for item in items if item.status == "in_progress") > 1:
            note = "\nNote: more than one item is in_progress; finish one before starting the next."
        return ToolResult(self.todos.render() + note, summary=f"TODO {self.todos.summary()} done")
