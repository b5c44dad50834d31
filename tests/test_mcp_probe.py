"""The operator's look at an MCP server: the tools it lists, shown in the Capability's status."""

from __future__ import annotations

import pytest

from overseer.api import Capability
from overseer.operator.mcp_probe import Probe, list_tools, tools_condition
from tests.support.mcp_server import ToolServer


def mcp_capability(**mcp) -> Capability:
    return Capability.model_validate({"metadata": {"name": "weather", "namespace": "team-a", "generation": 2},
                                      "spec": {"description": "weather tools",
                                               "mcp": {"url": "http://127.0.0.1:9/mcp", **mcp}}})


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
