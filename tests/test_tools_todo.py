"""The TODO list: the todo tool replaces it whole; summary, render and checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from overseer.agent.tools import TodoItem, TodoList, ToolContext, default_registry


@pytest.fixture
def todos() -> TodoList:
    return TodoList([
        TodoItem("Read the failing test", "done"),
        TodoItem("Fix the parser", "in_progress"),
        TodoItem("Run the full suite", "pending"),
    ])


def test_summary_counts_done_over_total(todos: TodoList) -> None:
    assert todos.summary() == "1/3"
    assert TodoList().summary() == "0/0"


def test_render_is_the_block_shown_to_the_model(todos: TodoList) -> None:
    assert todos.render() == (
        "TODO list (1/3 done):\n"
        "1. [x] Read the failing test\n"
        "2. [~] Fix the parser\n"
        "3. [ ] Run the full suite"
    )
    assert "empty" in TodoList().render() and not TodoList()


def test_round_trips_through_a_checkpoint(todos: TodoList) -> None:
    data = todos.to_dict()
    assert data == {"items": [
        {"text": "Read the failing test", "status": "done"},
        {"text": "Fix the parser", "status": "in_progress"},
        {"text": "Run the full suite", "status": "pending"},
    ]}
    restored = TodoList.from_dict(data)
    assert restored.to_dict() == data and restored.render() == todos.render()
    assert TodoList.from_dict(None).summary() == "0/0"
    assert TodoList.from_dict({"items": [{"text": "x", "status": "someday"}]}).items == [TodoItem("x", "pending")]


async def test_the_tool_replaces_the_whole_list(tmp_path: Path, todos: TodoList) -> None:
    registry = default_registry(todos)
    ctx = ToolContext(workspace=tmp_path)
    result = await registry.run("todo", {"items": [
        {"text": "Read the failing test", "status": "done"},
        {"text": "Fix the parser", "status": "done"},
        {"text": "Run the full suite", "status": "in_progress"},
        {"text": "Update the changelog", "status": "pending"},
    ]}, ctx)
    assert not result.is_error
    assert todos.summary() == "2/4"
    assert result.content == todos.render()
    assert result.summary == "TODO 2/4 done"
    cleared = await registry.run("todo", {"items": []}, ctx)
    assert not cleared.is_error and len(todos) == 0


async def test_the_tool_rejects_unknown_statuses_and_keeps_the_list(tmp_path: Path, todos: TodoList) -> None:
    registry = default_registry(todos)
    result = await registry.run("todo", {"items": [{"text": "Ship", "status": "completed"}]},
                                ToolContext(workspace=tmp_path))
    assert result.is_error and "items[0].status" in result.content
    assert todos.summary() == "1/3"


async def test_the_tool_warns_when_several_items_are_in_progress(tmp_path: Path) -> None:
    registry = default_registry()
    result = await registry.run("todo", {"items": [{"text": "a", "status": "in_progress"},
                                                   {"text": "b", "status": "in_progress"}]},
                                ToolContext(workspace=tmp_path))
    assert not result.is_error and "more than one item is in_progress" in result.content


def test_progress_is_the_list_done_over_total_or_else_the_iteration() -> None:
    todos = TodoList()
    assert todos.progress(4) == "iteration 4"
    todos.items = [TodoItem("Fix the parser", "done"), TodoItem("Run the suite", "pending")]
    assert todos.progress(4) == "1/2"
