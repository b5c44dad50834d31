"""Capabilities as tools: a command in the workspace, an HTTP endpoint, an MCP server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from overseer.agent.capability_tools import capability_tool
from overseer.agent.tools.base import ToolContext, ToolRegistry
from overseer.api import Capability


def cap(name: str, **spec: Any) -> Capability:
    return Capability.model_validate({"metadata": {"name": name, "namespace": "team-a"},
                                      "spec": {"description": f"the {name} tool", **spec}})


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_command_capability_gets_its_input_on_stdin(tmp_path: Path) -> None:
    tool = capability_tool(cap("echo-input", command={"run": ["cat"]}, inputSchema={
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}))
    registry = ToolRegistry([tool])
    ctx = ToolContext(workspace=tmp_path)
    result = await registry.run("echo-input", {"path": "src"}, ctx)
    assert not result.is_error and json.loads(result.content.split("\n", 1)[1]) == {"path": "src"}
    refused = await registry.run("echo-input", {"nope": 1}, ctx)
    assert refused.is_error and "path" in refused.content, "input is checked against inputSchema first"


async def test_command_capability_reports_failure_and_risk(tmp_path: Path) -> None:
    tool = capability_tool(cap("fail", risk="high", command={"run": ["sh", "-c", "echo broken; exit 3"]}))
    result = await tool.run({}, ToolContext(workspace=tmp_path))
    assert result.is_error and "exit code 3" in result.content and "broken" in result.content
    assert tool.assess({}, ToolContext(workspace=tmp_path)).risk == "high"


async def test_http_capability_posts_its_input(tmp_path: Path) -> None:
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"deployed": True})

    app = web.Application()
    app.router.add_post("/deploy", handler)
    runner, url = await serve(app)
    try:
        tool = capability_tool(cap("deploy", http={"url": f"{url}/deploy"}))
        result = await tool.run({"target": "staging"}, ToolContext(workspace=tmp_path))
    finally:
        await runner.cleanup()
    assert seen == [{"target": "staging"}]
    assert not result.is_error and "HTTP 200" in result.content and "deployed" in result.content


async def test_mcp_capability_calls_the_servers_tool(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        message = await request.json()
        calls.append(message)
        if message["method"] == "initialize":
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "test", "version": "1"}}}, headers={"Mcp-Session-Id": "s-1"})
        if message["method"] == "notifications/initialized":
            return web.Response(status=202)
        assert request.headers.get("Mcp-Session-Id") == "s-1"
        args = message["params"]["arguments"]
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {
            "content": [{"type": "text", "text": f"weather in {args['city']}: sunny"}], "isError": False}})

    app = web.Application()
    app.router.add_post("/mcp", handler)
    runner, url = await serve(app)
    try:
        tool = capability_tool(cap("weather", mcp={"url": f"{url}/mcp", "tool": "forecast"}))
        result = await tool.run({"city": "Oslo"}, ToolContext(workspace=tmp_path))
    finally:
        await runner.cleanup()
    assert not result.is_error and result.content == "weather in Oslo: sunny"
    assert [c["method"] for c in calls] == ["initialize", "notifications/initialized", "tools/call"]
    assert calls[-1]["params"]["name"] == "forecast"


async def test_a_command_capabilitys_credential_reaches_that_command_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from overseer.agent.main import _tool_env
    from overseer.agent.tools import BashTool
    from overseer.contract import capability_env

    deploy = cap("deploy", command={"run": ["sh", "-c", 'echo "token=$DEPLOY_TOKEN"'], "env": [
        {"name": "DEPLOY_TOKEN", "secretKeyRef": {"name": "deploy-creds", "key": "token"}}]})
    monkeypatch.setenv(capability_env("deploy", "DEPLOY_TOKEN"), "canary-deploy-4e1")  # as the kubelet sets it
    registry = ToolRegistry([capability_tool(deploy), BashTool()])
    settings = type("S", (), {"workspace": tmp_path})()
    ctx = ToolContext(workspace=tmp_path, env=_tool_env(settings))  # type: ignore[arg-type]

    used = await registry.run("deploy", {}, ctx)
    env = await registry.run("bash", {"command": "env; echo DEPLOY_TOKEN=$DEPLOY_TOKEN"}, ctx)

    assert "token=canary-deploy-4e1" in used.content
    assert "canary-deploy-4e1" not in env.content


async def test_a_missing_credential_secret_is_a_clear_error(tmp_path: Path) -> None:
    deploy = cap("deploy", command={"run": ["true"], "env": [
        {"name": "DEPLOY_TOKEN", "secretKeyRef": {"name": "deploy-creds", "key": "token"}}]})
    result = await ToolRegistry([capability_tool(deploy)]).run("deploy", {}, ToolContext(workspace=tmp_path))
    assert result.is_error and "spec.command.env DEPLOY_TOKEN" in result.content and "'deploy-creds'" in result.content
