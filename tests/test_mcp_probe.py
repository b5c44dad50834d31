"""The operator's look at an MCP server: the tools it lists, shown in the Capability's status."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from overseer.api import Capability
from overseer.operator.mcp_probe import Probe, Prober, list_tools, tools_condition
from overseer.operator.settings import Settings
from tests.support.mcp_server import ToolServer


def mcp_capability(**mcp) -> Capability:
    return Capability.model_validate({"metadata": {"name": "weather", "namespace": "team-a", "generation": 2},
                                      "spec": {"description": "weather tools",
                                               "mcp": {"url": "http://127.0.0.1:9/mcp"} | mcp}})


async def test_the_probe_lists_the_tools_of_a_real_server():
    server = await ToolServer().start()
    try:
        names = await list_tools(server.url, {"Authorization": "Bearer t"}, timeout=10)
    finally:
        await server.stop()

    assert sorted(names) == ["alerts", "forecast", "unlock"]
    assert server.headers[0].get("authorization") == "Bearer t"


async def test_the_probe_of_a_server_that_is_down_fails_within_its_timeout():
    server = await ToolServer().start()
    url = server.url
    await server.stop()

    with pytest.raises(Exception):  # noqa: B017 - any failure; the condition shows it
        await list_tools(url, {}, timeout=3)


def test_listed_tools_are_shown_narrowed_to_what_the_capability_offers():
    cap = mcp_capability(tools=["forecast"])

    status, reason, message = tools_condition(cap, Probe(2, ["forecast", "alerts"]))

    assert (status, reason) == ("True", "ToolsListed")
    assert message == "1 tools from http://127.0.0.1:9/mcp: forecast"


def test_a_server_that_cannot_be_reached_is_named_with_the_reason():
    status, reason, message = tools_condition(mcp_capability(), Probe(2, None, "ConnectError: connection refused"))

    assert (status, reason) == ("False", "ServerUnreachable")
    assert "spec.mcp.url http://127.0.0.1:9/mcp: ConnectError: connection refused" in message


def test_a_narrowing_that_names_a_tool_the_server_lacks_says_which():
    status, reason, message = tools_condition(mcp_capability(tools=["forecast", "radar"]), Probe(2, ["forecast"]))

    assert (status, reason) == ("False", "ToolNotOffered")
    assert "spec.mcp.tools names radar" in message and "it lists forecast" in message


def test_until_the_first_probe_ends_the_tools_are_unknown():
    assert tools_condition(mcp_capability(), None)[:2] == ("Unknown", "Probing")


class Queue:
    def __init__(self) -> None:
        self.added: list[tuple[str, str]] = []

    def add(self, key: tuple[str, str]) -> None:
        self.added.append(key)


def runtime(**settings: float) -> SimpleNamespace:
    return SimpleNamespace(settings=Settings(**settings), capabilities=Queue(), kube=None)


async def test_a_probe_runs_beside_the_reconcile_and_once_per_generation():
    server = await ToolServer().start()
    rt = runtime(mcp_probe_timeout_seconds=10)
    prober = Prober(rt)
    cap = mcp_capability(url=server.url)
    key = ("team-a", "weather")
    try:
        assert prober.result(key, cap) is None, "the reconcile does not wait for the server"
        await until(lambda: rt.capabilities.added == [key])
        probe = prober.result(key, cap)
        assert probe is not None and sorted(probe.tools) == ["alerts", "forecast", "unlock"]
        assert prober.result(key, cap) is probe
        await asyncio.sleep(0.2)
        assert rt.capabilities.added == [key], "no second probe for the same generation"
        newer = mcp_capability(url=server.url, tools=["forecast"])
        newer.metadata["generation"] = 3
        assert prober.result(key, newer) is None, "a changed Capability is probed again"
        await until(lambda: len(rt.capabilities.added) == 2)
    finally:
        await server.stop()


async def test_a_failed_probe_is_tried_again_after_the_retry_interval():
    rt = runtime(mcp_probe_timeout_seconds=2, mcp_probe_retry_seconds=0.5)
    prober = Prober(rt)
    cap = mcp_capability()  # nothing listens on port 9
    key = ("team-a", "weather")

    prober.result(key, cap)
    await until(lambda: len(rt.capabilities.added) == 1)
    failed = prober.result(key, cap)
    assert failed is not None and failed.tools is None and failed.error
    await asyncio.sleep(0.6)
    prober.result(key, cap)
    await until(lambda: len(rt.capabilities.added) == 2)


async def until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
