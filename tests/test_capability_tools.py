"""Capabilities as tools: a command in the workspace, an HTTP endpoint (MCP servers: test_mcp_tools.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from overseer.agent.capability_tools import capability_tool
from overseer.agent.tools.base import ToolContext, ToolRegistry
from overseer.api import Capability
from overseer.contract import secret_env


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


async def test_http_capability_sends_headers_from_secrets_the_model_never_sees(tmp_path: Path, monkeypatch) -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"deleted": request.query.get("id")})

    app = web.Application()
    app.router.add_delete("/items", handler)
    runner, url = await serve(app)
    monkeypatch.setenv(secret_env("tracker", "token"), "Bearer s3cret")
    try:
        tool = capability_tool(cap("delete-item", http={"url": f"{url}/items", "method": "DELETE", "headers": [
            {"name": "Authorization", "secretKeyRef": {"name": "tracker", "key": "token"}},
            {"name": "X-Team", "value": "a"}]}))
        result = await tool.run({"id": 7}, ToolContext(workspace=tmp_path))
    finally:
        await runner.cleanup()
    [request] = seen
    assert request.headers["Authorization"] == "Bearer s3cret" and request.headers["X-Team"] == "a"
    assert not result.is_error and '"deleted": "7"' in result.content
    assert "s3cret" not in json.dumps(tool.definition()) + result.content


async def test_http_capability_without_its_secret_says_which_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(secret_env("tracker", "token"), raising=False)
    tool = capability_tool(cap("deploy", http={"url": "http://127.0.0.1:9/deploy", "headers": [
        {"name": "Authorization", "secretKeyRef": {"name": "tracker", "key": "token"}}]}))

    result = await ToolRegistry([tool]).run("deploy", {}, ToolContext(workspace=tmp_path))

    assert result.is_error and "Secret 'tracker'" in result.content and "'token'" in result.content


async def test_http_capability_cuts_a_long_response_and_says_so(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="x" * 5000)

    app = web.Application()
    app.router.add_post("/logs", handler)
    runner, url = await serve(app)
    try:
        tool = capability_tool(cap("logs", http={"url": f"{url}/logs", "maxResponseBytes": 1000}))
        result = await tool.run({}, ToolContext(workspace=tmp_path))
    finally:
        await runner.cleanup()
    assert result.content.split("\n")[1] == "x" * 1000
    assert "cut at 1000 bytes (spec.http.maxResponseBytes)" in result.content


async def test_http_capability_on_a_service_that_is_down_gives_an_error_the_model_can_act_on(tmp_path: Path) -> None:
    runner, url = await serve(web.Application())
    await runner.cleanup()  # the port is free again: nothing listens
    tool = capability_tool(cap("deploy", http={"url": f"{url}/deploy"}))

    result = await ToolRegistry([tool]).run("deploy", {}, ToolContext(workspace=tmp_path))

    assert result.is_error and f"{url}/deploy failed" in result.content and "try again later" in result.content


async def test_http_capability_gives_up_after_its_timeout(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/slow", handler)
    runner, url = await serve(app)
    try:
        tool = capability_tool(cap("slow", http={"url": f"{url}/slow", "timeout": "1s"}))
        result = await ToolRegistry([tool]).run("slow", {}, ToolContext(workspace=tmp_path))
    finally:
        await runner.cleanup()
    assert result.is_error and "did not answer within 1s" in result.content


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
