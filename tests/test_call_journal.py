"""A finished command is not run again when a replaced pod resumes at its call (shell.journal):
the outcome is recorded where the command runs, even once the agent that asked is gone."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overseer.agent.tools import ToolContext, default_registry
from overseer.agent.tools.shell import journal, run_command
from overseer.agent.tools.shell.sandbox import SandboxUnavailable, serve
from overseer.agent.tools.todo import TodoList

SLOW_STEP = "echo begin >> calls.txt; sleep 0.5; echo end >> calls.txt"


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[ToolContext]:
    """A tools container (shell.sandbox) in this process, serving a workspace."""
    workspace, socket = tmp_path / "workspace", tmp_path / "socket" / "tools.sock"
    workspace.mkdir()
    ready = asyncio.Event()
    server = asyncio.create_task(serve(socket, workspace, ready))
    await ready.wait()
    yield ToolContext(workspace=workspace, tools_socket=socket, goal_uid="uid-1")
    server.cancel()


def calls(ctx: ToolContext) -> list[str]:
    return (ctx.workspace / "calls.txt").read_text().split()


async def bash(ctx: ToolContext, command: str, call_id: str) -> str:
    registry = default_registry(TodoList())
    return (await registry.run("bash", {"command": command}, dataclasses.replace(ctx, call_id=call_id))).content


async def test_a_call_run_again_after_a_restart_gets_its_recorded_outcome(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, goal_uid="uid-1")
    first = await bash(ctx, "echo ran >> calls.txt; echo hello", "toolu_01")
    again = await bash(ctx, "echo ran >> calls.txt; echo hello", "toolu_01")
    assert calls(ctx) == ["ran"]
    assert first.startswith("hello") and again.startswith("hello") and "not run again" in again
    await bash(ctx, "echo ran >> calls.txt", "toolu_02")  # another call runs
    assert calls(ctx) == ["ran", "ran"]


async def test_the_tools_container_records_a_command_the_agent_stopped_waiting_for(sandbox: ToolContext) -> None:
    asking = asyncio.create_task(bash(sandbox, SLOW_STEP, "toolu_01"))
    await asyncio.sleep(0.2)
    asking.cancel()  # the agent is killed mid-call; its tools container goes on
    with pytest.raises(asyncio.CancelledError):
        await asking
    resumed = await bash(sandbox, SLOW_STEP, "toolu_01")  # waits for the first run, then reads its record
    assert calls(sandbox) == ["begin", "end"]
    assert "exit code 0" in resumed and "not run again" in resumed


async def test_two_pods_asking_for_one_call_at_once_run_it_once(sandbox: ToolContext) -> None:
    answers = await asyncio.gather(bash(sandbox, SLOW_STEP, "toolu_01"), bash(sandbox, SLOW_STEP, "toolu_01"))
    assert calls(sandbox) == ["begin", "end"]
    assert sum("not run again" in a for a in answers) == 1


async def test_the_tools_container_writes_records_only_where_records_live(sandbox: ToolContext) -> None:
    with pytest.raises(SandboxUnavailable, match="is not a call record"):
        await run_command("true", cwd=sandbox.workspace, env={}, timeout=5, output_limit=100,
                          sandbox=sandbox.tools_socket, record=sandbox.workspace / "parser.py")
    assert journal.record_path(sandbox.workspace, "uid-1", "../../etc/passwd") is None
    assert dataclasses.replace(sandbox, call_id="toolu_01").record == \
        sandbox.workspace / ".overseer" / "calls" / "uid-1" / "toolu_01.json"


async def test_a_goals_records_are_dropped_once_it_has_ended_and_only_its_own(tmp_path: Path) -> None:
    for uid in ("uid-done", "uid-other"):
        record = journal.record_path(tmp_path, uid, "toolu_1")
        assert record is not None
        await run_command("echo hi", cwd=tmp_path, env={}, timeout=10, output_limit=1000, record=record)
        assert record.exists()
    journal.forget(tmp_path, "uid-done")
    journal.forget(tmp_path, "..")  # not a uid: nothing outside the goal's folder goes
    assert sorted(p.name for p in (tmp_path / journal.FOLDER).iterdir()) == ["uid-other"]
