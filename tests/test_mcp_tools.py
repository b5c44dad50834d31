"""An MCP server's tools offered to the model, through the official SDK, against a real server
built with the same SDK on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from overseer.agent.mcp_tools import McpSession, tool_name
from overseer.agent.tools.base import ToolContext, ToolRegistry
from overseer.api import Capability
from tests.support.mcp_server import ToolServer


def mcp_capability(name: str, url: str, status: dict[str, Any] | None = None, **mcp: Any) -> Capability:
    return Capability.model_validate({"metadata": {"name": name, "namespace": "team-a"},
                                      "spec": {"description": "weather tools", "mcp": {"url": url, **mcp}},
                                      "status": status or {}})


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    srv = await ToolServer().start()
    yield srv
    await srv.stop()


@pytest.fixture
async def session() -> AsyncIterator[Callable[..., Any]]:
    opened: list[McpSession] = []

    async def open_(cap: Capability, registry: ToolRegistry, headers: dict[str, str] | None = None,
                    wait: float = 30) -> McpSession:
        s = McpSession(cap, registry, headers or {})
        opened.append(s)
        await s.start(wait)
        return s

    yield open_
    for s in opened:
        await s.close()


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_the_servers_tools_are_offered_under_prefixed_names_with_their_own_schemas(server, session, tmp_path):
    registry = ToolRegistry()

    s = await session(mcp_capability("weather", server.url), registry)

    assert sorted(registry.names()) == ["weather__alerts", "weather__forecast", "weather__unlock"]
    forecast = registry.get("weather__forecast")
    assert forecast.input_schema["properties"]["city"]["type"] == "string"
    assert forecast.input_schema["required"] == ["city"]
    assert "forecast for a city" in forecast.description
    assert s.protocol_version, "the SDK negotiated a protocol version"
    result = await registry.run("weather__forecast", {"city": "Oslo", "days": 2}, ToolContext(workspace=tmp_path))
    assert (result.is_error, result.content) == (False, "sunny in Oslo for 2 day(s)")
    refused = await registry.run("weather__forecast", {"days": 2}, ToolContext(workspace=tmp_path))
    assert refused.is_error and "city" in refused.content, "the server's schema is checked before the call"
    assert server.calls == [("forecast", {"city": "Oslo", "days": 2})]


async def test_one_session_serves_every_call(server, session, tmp_path):
    registry = ToolRegistry()
    await session(mcp_capability("weather", server.url), registry)
    ctx = ToolContext(workspace=tmp_path)

    for city in ("Oslo", "Bergen", "Tromsø"):
        assert not (await registry.run("weather__forecast", {"city": city}, ctx)).is_error

    methods = [h.get("mcp-method") for h in server.headers]
    assert methods.count("server/discover") + methods.count("initialize") == 1, f"one session, saw {methods}"
    assert methods.count("tools/call") == 3
    versions = {h.get("mcp-protocol-version") for h in server.headers}
    assert len(versions) == 1 and None not in versions, "every request names the negotiated version"


async def test_a_capability_narrows_the_tools_and_sets_a_risk_per_tool(server, session):
    registry = ToolRegistry()

    await session(mcp_capability("weather", server.url, tools=["forecast", "alerts"], toolRisk={"alerts": "high"}),
                  registry)

    assert sorted(registry.names()) == ["weather__alerts", "weather__forecast"]
    assert registry.get("weather__alerts").risk == "high"
    assert registry.get("weather__forecast").risk == "low"


async def test_headers_reach_the_server(server, session):
    await session(mcp_capability("weather", server.url), ToolRegistry(), {"Authorization": "Bearer s3cret"})

    assert server.headers and all(h.get("authorization") == "Bearer s3cret" for h in server.headers)


async def test_a_changed_tool_list_is_read_again(server, session, tmp_path):
    registry = ToolRegistry()
    await session(mcp_capability("weather", server.url), registry)

    result = await registry.run("weather__unlock", {}, ToolContext(workspace=tmp_path))

    assert not result.is_error
    await until(lambda: "weather__shout" in registry)
    shouted = await registry.run("weather__shout", {"text": "storm"}, ToolContext(workspace=tmp_path))
    assert shouted.content == "STORM"


async def test_a_server_that_is_down_gives_the_model_an_error_it_can_act_on(session, tmp_path):
    srv = await ToolServer().start()
    url = srv.url
    await srv.stop()
    registry = ToolRegistry()
    cap = mcp_capability("weather", url, status={"tools": ["forecast"], "toolCount": 1}, timeout="3s")

    await session(cap, registry, wait=5)

    assert registry.names() == ["weather__forecast"], "the tools the operator last found are offered"
    result = await registry.run("weather__forecast", {"city": "Oslo"}, ToolContext(workspace=tmp_path))
    assert result.is_error
    assert "unreachable" in result.content and url in result.content and "go on without" in result.content


async def test_a_server_that_comes_back_is_used_again(session, tmp_path):
    srv = await ToolServer().start()
    registry = ToolRegistry()
    await session(mcp_capability("weather", srv.url, timeout="5s"), registry)
    ctx = ToolContext(workspace=tmp_path)
    await srv.stop()

    down = await registry.run("weather__forecast", {"city": "Oslo"}, ctx)
    await srv.start()
    try:
        back = await registry.run("weather__forecast", {"city": "Oslo"}, ctx)
    finally:
        await srv.stop()

    assert down.is_error and "unreachable" in down.content
    assert (back.is_error, back.content) == (False, "sunny in Oslo for 1 day(s)")


def test_tool_names_are_stable_and_fit_the_messages_api():
    assert tool_name("weather.v2", "get forecast!") == "weather_v2__get_forecast_"
    assert len(tool_name("a" * 60, "tool")) == 64
    assert tool_name("weather", "forecast") == tool_name("weather", "forecast")


def test_the_sdk_is_not_imported_by_an_agent_without_mcp_servers(tmp_path: Path):
    import subprocess
    import sys

    code = "import sys, overseer.agent.main; print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
