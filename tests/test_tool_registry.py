"""The registry: definitions for the Messages API, input validation, and calls that never raise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from overseer.agent.tools import (
    Assessment,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
    WorkspaceError,
    default_registry,
    resolve_in_workspace,
    risk_at_least,
)


class Echo(Tool):
    name = "echo"
    description = "Return the text."
    input_schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(input["text"] * input.get("times", 1), summary="echoed")


class Broken(Tool):
    name = "broken"
    description = "Always fails."
    input_schema = {"type": "object"}
    risk = "medium"

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        if input.get("expected"):
            raise ToolError("the thing you asked for is not there")
        raise RuntimeError("disk on fire")


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([Echo(), Broken()])


def test_definitions_are_what_the_messages_api_takes(registry: ToolRegistry) -> None:
    assert registry.definitions() == [
        {"name": "echo", "description": "Return the text.", "input_schema": Echo.input_schema},
        {"name": "broken", "description": "Always fails.", "input_schema": {"type": "object"}},
    ]
    assert registry.get("echo").name == "echo"
    assert registry.get("nope") is None
    assert "echo" in registry and len(registry) == 2


def test_built_in_tools_have_valid_distinct_definitions() -> None:
    registry = default_registry()
    names = [d["name"] for d in registry.definitions()]
    assert names == ["read_file", "list_directory", "glob", "grep", "edit_file", "write_file", "bash", "todo"]
    for definition in registry.definitions():
        assert definition["description"] and definition["input_schema"]["type"] == "object"


def test_registering_a_name_twice_is_refused(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Echo())


def test_a_tool_with_an_invalid_schema_from_data_is_refused() -> None:
    """A schema set per instance comes from a Capability, an MCP server or a script tool."""
    odd = Echo()
    odd.name = "odd"
    odd.input_schema = {"type": "object", "properties": {"n": {"type": "integr"}}}

    with pytest.raises(ValueError, match="tool odd: input_schema is not a valid JSON Schema"):
        ToolRegistry([odd])


def test_every_schema_written_in_a_tool_class_is_valid() -> None:
    """The registry leaves these to this test (their validators are made at a tool's first call)."""
    import importlib
    import pkgutil

    import jsonschema

    import overseer.agent

    for info in pkgutil.walk_packages(overseer.agent.__path__, "overseer.agent."):
        if not info.name.startswith("overseer.agent.knowledge"):  # psycopg; its tool is in tools.knowledge_search
            importlib.import_module(info.name)
    classes, todo = [], list(Tool.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "input_schema" in vars(cls) and cls.__module__.startswith("overseer.agent."):
            classes.append(cls)
            jsonschema.validators.validator_for(cls.input_schema).check_schema(cls.input_schema)
    assert {"bash", "read_file", "todo", "spawn_subgoal", "propose_script_tool", "search_knowledge"} <= {c.name for c in classes}


def test_validation_names_the_missing_field(registry: ToolRegistry) -> None:
    assert registry.validate("echo", {"text": "hi"}) is None
    assert registry.validate("echo", {}) == "Invalid input for echo: missing required field 'text'"


def test_validation_names_the_field_with_the_wrong_type(registry: ToolRegistry) -> None:
    message = registry.validate("echo", {"text": "hi", "times": "two"})
    assert message is not None and "'times'" in message and "integer" in message


def test_validation_names_unexpected_fields(registry: ToolRegistry) -> None:
    message = registry.validate("echo", {"text": "hi", "colour": "red"})
    assert message is not None and "unexpected field 'colour'" in message


def test_validation_names_nested_fields() -> None:
    registry = default_registry()
    message = registry.validate("todo", {"items": [{"text": "a", "status": "done"}, {"text": "b", "status": "later"}]})
    assert message is not None and "items[1].status" in message and "later" in message


async def test_valid_call_runs_the_tool(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.run("echo", {"text": "ab", "times": 2}, ctx)
    assert (result.content, result.is_error, result.summary, result.risk) == ("abab", False, "echoed", "low")


async def test_unknown_tool_becomes_an_error_result(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.run("teleport", {}, ctx)
    assert result.is_error
    assert "Unknown tool 'teleport'" in result.content and "echo, broken" in result.content


async def test_invalid_input_becomes_an_error_result_without_running(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.run("echo", {"times": 3}, ctx)
    assert result.is_error and "missing required field 'text'" in result.content


async def test_tool_errors_become_their_message(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.run("broken", {"expected": True}, ctx)
    assert result.is_error and result.content == "the thing you asked for is not there"


async def test_unexpected_exceptions_become_error_results(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.run("broken", {}, ctx)
    assert result.is_error
    assert result.content == "broken failed unexpectedly: RuntimeError: disk on fire"
    assert result.risk == "medium"


def test_assess_uses_the_static_risk_by_default(registry: ToolRegistry, ctx: ToolContext) -> None:
    assert registry.assess("broken", {}, ctx) == Assessment("medium", "broken is a medium-risk tool")


def test_calls_that_will_be_refused_are_low_risk_and_change_nothing(registry: ToolRegistry, ctx: ToolContext) -> None:
    for name, args in (("teleport", {}), ("echo", {"times": 0})):
        assessment = registry.assess(name, args, ctx)
        assert assessment.risk == "low" and not assessment.side_effects


def test_risk_is_compared_with_the_approval_threshold() -> None:
    assert risk_at_least("high", "high") and risk_at_least("medium", "low")
    assert not risk_at_least("medium", "high")


def test_an_unknown_risk_or_threshold_counts_as_high() -> None:
    assert risk_at_least("critical", "high"), "an unknown risk waits for approval"
    assert risk_at_least("high", "everything") and not risk_at_least("medium", "everything")


def test_an_assessment_that_fails_is_high_risk(ctx: ToolContext) -> None:
    class Fussy(Echo):
        name = "fussy"

        def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
            raise KeyError("boom")

    assessment = ToolRegistry([Fussy()]).assess("fussy", {"text": "x"}, ctx)
    assert assessment.risk == "high" and "KeyError" in assessment.reason


def test_relative_paths_resolve_inside_the_workspace(ctx: ToolContext) -> None:
    workspace = ctx.workspace.resolve()
    assert resolve_in_workspace(ctx, "src/a.py") == workspace / "src" / "a.py"
    assert resolve_in_workspace(ctx, "src/../b.py") == workspace / "b.py"
    assert resolve_in_workspace(ctx, ".") == workspace
    assert resolve_in_workspace(ctx, str(workspace / "c.py")) == workspace / "c.py"


@pytest.mark.parametrize("path, message", [
    ("../outside.txt", "escapes the workspace"),
    ("src/../../outside.txt", "escapes the workspace"),
    ("/etc/passwd", "is outside the workspace"),
    ("~/.ssh/id_rsa", "is outside the workspace"),
])
def test_paths_cannot_leave_the_workspace(ctx: ToolContext, path: str, message: str) -> None:
    with pytest.raises(WorkspaceError, match=message):
        resolve_in_workspace(ctx, path)


def test_symlinks_cannot_lead_out_of_the_workspace(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (workspace / "escape").symlink_to(outside)
    (workspace / "inner").symlink_to(workspace)
    ctx = ToolContext(workspace=workspace)
    with pytest.raises(WorkspaceError, match="through a symlink"):
        resolve_in_workspace(ctx, "escape/secret.txt")
    assert resolve_in_workspace(ctx, "inner/a.txt") == workspace.resolve() / "a.txt"
