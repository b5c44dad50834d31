"""Built-in tools of the agent: files, bash and the TODO list, behind one registry.

    registry = default_registry(todos)
    response = client.messages.create(..., tools=registry.definitions())
    result = await registry.run(block.name, block.input, ctx)   # never raises
"""

from __future__ import annotations

from .base import (
    Assessment,
    Classification,
    Risk,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
    WorkspaceError,
    resolve_in_workspace,
    risk_at_least,
)
from .bash import BashTool
from .files import EditFile, Glob, Grep, ListDirectory, ReadFile, WriteFile
from .shell import classify_command
from .todo import TodoItem, TodoList, TodoTool


def default_tools(todos: TodoList | None = None) -> list[Tool]:
    """One of each built-in tool; the todo tool keeps its list in `todos`."""
    return [ReadFile(), ListDirectory(), Glob(), Grep(), EditFile(), WriteFile(), BashTool(), TodoTool(todos)]


def default_registry(todos: TodoList | None = None) -> ToolRegistry:
    """A registry holding the built-in tools."""
    return ToolRegistry(default_tools(todos))


__all__ = [
    "Assessment", "BashTool", "Classification", "EditFile", "Glob", "Grep", "ListDirectory", "ReadFile", "Risk",
    "TodoItem", "TodoList", "TodoTool", "Tool", "ToolContext", "ToolError", "ToolRegistry", "ToolResult",
    "WorkspaceError", "WriteFile", "classify_command", "default_registry", "default_tools", "resolve_in_workspace",
    "risk_at_least",
]
