"""An Agent's Capabilities as tools: a command in the pod, an HTTP endpoint, or a tool of an
MCP server. The call's input is validated against the Capability's inputSchema first (by the
registry), and the Capability's risk decides whether the call waits for approval."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import aiohttp

from overseer import __version__
from overseer.api import Capability, parse_duration
from overseer.contract import capability_env

from .tools.base import Tool, ToolContext, ToolError, ToolResult
from .tools.shell import run_process


class CapabilityTool(Tool):
    def __init__(self, cap: Capability) -> None:
        self.cap = cap
        self.name = cap.name.replace(".", "_")
        self.description = cap.spec.description
        self.input_schema = cap.spec.input_schema or {"type": "object"}
        self.risk = cap.spec.risk

    def _timeout(self, default: str) -> float:
        spec = self.cap.spec.command or self.cap.spec.http
        return parse_duration(getattr(spec, "timeout", None) or default).total_seconds()


class CommandCapability(CapabilityTool):
    """Runs spec.command.run in the workspace with the input as JSON on stdin."""

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        assert self.cap.spec.command is not None
        argv = self.cap.spec.command.run
        outcome = await run_process(argv, cwd=ctx.workspace, env=ctx.env, timeout=self._timeout("5m"),
                                    output_limit=ctx.output_limit, input=json.dumps(dict(input)).encode(),
                                    sandbox=ctx.tools_socket, extra_env=self.credentials())
        if outcome.timed_out:
            return ToolResult(f"{' '.join(argv)} timed out", is_error=True, summary=f"{self.name}: timed out")
        return ToolResult(f"exit code {outcome.exit_code}\n{outcome.output}", is_error=outcome.exit_code != 0,
                          summary=f"{self.name}: exit {outcome.exit_code}")


    def credentials(self) -> dict[str, str]:
        """spec.command.env, from the agent container's environment (the kubelet resolved the
        Secrets): for this command's process only."""
        assert self.cap.spec.command is not None
        values = {}
        for var in self.cap.spec.command.env:
            value = os.environ.get(capability_env(self.cap.name, var.name))
            if value is None:
                ref = var.secret_key_ref
                raise ToolError(f"Capability {self.cap.name}: spec.command.env {var.name} is not set: Secret "
                                f"{ref.name!r} or its key {ref.key!r} is missing in the namespace; ask for it to be "
                                "created")
            values[var.name] = value
        return values


class HttpCapability(CapabilityTool):
    """Sends the input as a JSON body to spec.http.url."""

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        assert self.cap.spec.http is not None
        http = self.cap.spec.http
        timeout = aiohttp.ClientTimeout(total=self._timeout("60s"))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            kwargs = {"params": {k: str(v) for k, v in input.items()}} if http.method == "GET" else {"json": dict(input)}
            async with session.request(http.method, http.url, **kwargs) as resp:
                text = (await resp.text())[:ctx.output_limit]
        return ToolResult(f"HTTP {resp.status}\n{text}", is_error=resp.status >= 400,
                          summary=f"{self.name}: HTTP {resp.status}")


class McpCapability(CapabilityTool):
    """Calls one tool of an MCP server over the streamable HTTP transport."""

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        assert self.cap.spec.mcp is not None
        mcp = self.cap.spec.mcp
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            init = await _rpc(session, mcp.url, headers, "initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "overseer-agent", "version": __version__}}, 1)
            if init.get("session"):
                headers["Mcp-Session-Id"] = init["session"]
            async with session.post(mcp.url, headers=headers,
                                    json={"jsonrpc": "2.0", "method": "notifications/initialized"}):
                pass
            answer = await _rpc(session, mcp.url, headers, "tools/call",
                                {"name": mcp.tool or self.cap.name, "arguments": dict(input)}, 2)
        if "error" in answer:
            return ToolResult(f"MCP error: {answer['error']}", is_error=True, summary=f"{self.name}: error")
        result = answer.get("result") or {}
        text = "\n".join(c.get("text", json.dumps(c)) for c in result.get("content") or [])
        return ToolResult(text[:ctx.output_limit], is_error=bool(result.get("isError")), summary=f"{self.name}: done")


async def _rpc(session: aiohttp.ClientSession, url: str, headers: dict[str, str], method: str,
               params: dict[str, Any], rpc_id: int) -> dict[str, Any]:
    async with session.post(url, headers=headers,
                            json={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}) as resp:
        resp.raise_for_status()
        session_id = resp.headers.get("Mcp-Session-Id")
        if resp.content_type == "text/event-stream":
            answer: dict[str, Any] = {}
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("id") == rpc_id:
                        answer = message
                        break
        else:
            answer = await resp.json()
    if session_id:
        answer["session"] = session_id
    return answer


def capability_tool(cap: Capability) -> CapabilityTool:
    """The tool that runs this Capability the way its spec says."""
    if cap.spec.command is not None:
        return CommandCapability(cap)
    if cap.spec.http is not None:
        return HttpCapability(cap)
    return McpCapability(cap)
