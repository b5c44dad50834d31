"""An Agent's Capabilities as tools: a command in the pod or an HTTP endpoint (an MCP server's
tools: overseer.agent.mcp_tools). The call's input is validated against the Capability's inputSchema first (by the
registry), and the Capability's risk decides whether the call waits for approval."""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from overseer.api import Capability, parse_duration
from overseer.api.capability import Header
from overseer.contract import capability_env, secret_env

from .capability_stats import CallStats
from .tools.base import Tool, ToolContext, ToolError, ToolResult
from .tools.shell import run_process


class CapabilityTool(Tool):
    def __init__(self, cap: Capability, stats: CallStats | None = None) -> None:
        self.cap = cap
        self.stats = stats or CallStats()
        self.name = cap.name.replace(".", "_")
        self.description = cap.spec.description
        self.input_schema = cap.spec.input_schema or {"type": "object"}
        self.risk = cap.spec.risk

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.stats.timed(self.cap.name, self.call(input, ctx))

    @abstractmethod
    async def call(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        """One call, counted by run()."""

    def _timeout(self, default: str) -> float:
        spec = self.cap.spec.command or self.cap.spec.http
        return parse_duration(getattr(spec, "timeout", None) or default).total_seconds()


class CommandCapability(CapabilityTool):
    """Runs spec.command.run in the workspace with the input as JSON on stdin."""

    async def call(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        assert self.cap.spec.command is not None
        argv = self.cap.spec.command.run
        outcome = await run_process(argv, cwd=ctx.workspace, env=ctx.env, timeout=self._timeout("5m"),
                                    output_limit=ctx.output_limit, input=json.dumps(dict(input)).encode(),
                                    sandbox=ctx.tools_socket, extra_env=self.credentials(), record=ctx.record)
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
    """Sends the input to spec.http.url: as query parameters for GET and DELETE, as a JSON body
    otherwise, with the headers the spec names (Secret values from the pod's environment)."""

    async def call(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        import aiohttp  # here: a goal pod that calls no HTTP Capability never loads it (kube_client)

        assert self.cap.spec.http is not None
        http = self.cap.spec.http
        headers = resolve_headers(self.cap, http.headers)
        timeout = aiohttp.ClientTimeout(total=self._timeout("60s"))
        as_query = http.method in ("GET", "DELETE")
        kwargs: dict[str, Any] = {"params": {k: str(v) for k, v in input.items()}} if as_query else {"json": dict(input)}
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.request(http.method, http.url, headers=headers, **kwargs) as resp:
                body = await resp.content.read(http.max_response_bytes + 1)
                status = resp.status
        except TimeoutError:
            raise ToolError(f"{self.name}: {http.method} {http.url} did not answer within {http.timeout}") from None
        except aiohttp.ClientError as exc:
            raise ToolError(f"{self.name}: {http.method} {http.url} failed: {type(exc).__name__}: {exc}. "
                            f"The service may be down; go on without it or try again later.") from None
        cut = len(body) > http.max_response_bytes
        text = body[:http.max_response_bytes].decode(errors="replace")[:ctx.output_limit]
        note = f"\n[response cut at {http.max_response_bytes} bytes (spec.http.maxResponseBytes)]" if cut else ""
        return ToolResult(f"HTTP {status}\n{text}{note}", is_error=status >= 400, summary=f"{self.name}: HTTP {status}")


def resolve_headers(cap: Capability, headers: list[Header], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Header values: literal, or from the pod's environment, where the operator put the Secret
    keys the headers name (overseer.contract.secret_env)."""
    env = os.environ if environ is None else environ
    out = {}
    for header in headers:
        if header.secret_key_ref is None:
            out[header.name] = header.value or ""
            continue
        ref = header.secret_key_ref
        value = env.get(secret_env(ref.name, ref.key))
        if value is None:
            raise ToolError(f"{cap.name}: header {header.name} needs key {ref.key!r} of Secret {ref.name!r}, which "
                            f"this pod was not given (the pod predates the header, or the Secret is missing)")
        out[header.name] = value
    return out


def capability_tool(cap: Capability, stats: CallStats | None = None) -> CapabilityTool:
    """The tool that runs a command or HTTP Capability (MCP servers: overseer.agent.mcp_tools)."""
    if cap.spec.command is not None:
        return CommandCapability(cap, stats)
    return HttpCapability(cap, stats)
