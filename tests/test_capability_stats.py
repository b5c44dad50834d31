"""The agent's tally of Capability calls, reported in its Goal's status."""

from __future__ import annotations

from pathlib import Path

from overseer.agent.capability_stats import CallStats
from overseer.agent.capability_tools import capability_tool
from overseer.agent.tools.base import ToolContext, ToolRegistry
from overseer.api import Capability


def command(name: str, run: list[str]) -> Capability:
    return Capability.model_validate({"metadata": {"name": name, "namespace": "team-a"},
                                      "spec": {"description": name, "command": {"run": run}}})


async def test_each_call_is_counted_and_reported_as_it_ends(tmp_path: Path) -> None:
    reports: list[list[dict]] = []

    async def report(entries: list[dict]) -> None:
        reports.append(entries)

    stats = CallStats(report)
    registry = ToolRegistry([capability_tool(command("ok", ["true"]), stats),
                             capability_tool(command("broken", ["false"]), stats)])
    ctx = ToolContext(workspace=tmp_path)

    await registry.run("ok", {}, ctx)
    await registry.run("ok", {}, ctx)
    await registry.run("broken", {}, ctx)

    assert len(reports) == 3
    last = {e["name"]: e for e in reports[-1]}
    assert (last["ok"]["calls"], last["ok"]["failures"]) == (2, 0)
    assert (last["broken"]["calls"], last["broken"]["failures"]) == (1, 1)
    assert len(last["ok"]["recentMs"]) == 2 and all(ms >= 0 for ms in last["ok"]["recentMs"])


async def test_a_new_attempt_carries_on_from_what_the_last_one_reported(tmp_path: Path) -> None:
    stats = CallStats()
    stats.restore([{"name": "ok", "calls": 7, "failures": 2, "recentMs": [30] * 20}])

    await capability_tool(command("ok", ["true"]), stats).run({}, ToolContext(workspace=tmp_path))

    [entry] = stats.status()
    assert (entry["calls"], entry["failures"], len(entry["recentMs"])) == (8, 2, 20)
