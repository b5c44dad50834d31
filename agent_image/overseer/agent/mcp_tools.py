"""The tools of an MCP server, through the official `mcp` SDK: one session per goal pod and
server (streamable HTTP, protocol version negotiated by the SDK), its tool list read at start
and again whenever the server says it changed, each tool offered to the model as
CAPABILITY__TOOL with the server's own input schema.

Imported only when an Agent has an MCP capability: the SDK costs seconds of start time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from overseer import __version__
from overseer.api import Capability, parse_duration

from .capability_stats import CallStats
from .tools.base import Risk, Tool, ToolContext, ToolRegistry, ToolResult

logger = logging.getLogger(__name__)
logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
NAME_LIMIT = 64
"""The Messages API's limit on a tool name."""


def tool_name(capability: str, tool: str) -> str:
    """The stable name the model sees for a server's tool: CAPABILITY__TOOL, in the characters
    and length the Messages API accepts."""
    return _NAME_UNSAFE.sub("_", f"{capability}__{tool}")[:NAME_LIMIT]


def offered(cap: Capability, tools: list[mcp_types.Tool]) -> list[mcp_types.Tool]:
    """The server's tools the Capability lets the agent use (spec.mcp.tools narrows; empty means all)."""
    assert cap.spec.mcp is not None
    wanted = set(cap.spec.mcp.tools)
    return [t for t in tools if not wanted or t.name in wanted]


class ServerUnavailable(Exception):
    """The MCP server cannot be reached or the session broke."""


class McpServerTool(Tool):
    """One tool of an MCP server, called through the server's session."""

    def __init__(self, server: McpSession, tool: mcp_types.Tool | str, risk: Risk) -> None:
        self.server = server
        self.remote = tool if isinstance(tool, str) else tool.name
        self.name = tool_name(server.cap.name, self.remote)
        described = "" if isinstance(tool, str) else (tool.description or tool.title or "")
        self.description = (described or f"the {self.remote} tool") + f" (MCP server of capability {server.cap.name})"
        self.input_schema = {"type": "object"} if isinstance(tool, str) else dict(tool.input_schema)
        self.risk = risk

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.server.stats.timed(self.server.cap.name, self.server.call(self, dict(input), ctx))


class McpSession:
    """The goal pod's session with the MCP server of one Capability, kept by a task of its own
    (the SDK's transport lives in task groups that must start and end in one task), reopened
    when a call finds it broken."""

    def __init__(self, cap: Capability, registry: ToolRegistry, headers: dict[str, str],
                 stats: CallStats | None = None) -> None:
        assert cap.spec.mcp is not None
        self.cap = cap
        self.stats = stats or CallStats()
        self.url = cap.spec.mcp.url
        self.registry = registry
        self.headers = headers
        self.timeout = parse_duration(cap.spec.mcp.timeout).total_seconds()
        self.client: Client | None = None
        self.error: str | None = None
        self.protocol_version: str | None = None
        self._tools: dict[str, McpServerTool] = {}
        self._connected = asyncio.Event()   # set once a connection attempt has ended, either way
        self._wanted = asyncio.Event()      # a call needs a session and there is none
        self._drop = asyncio.Event()        # the session broke (or is closing): end it
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 10) -> None:
        """Open the session and register the server's tools; when the server cannot be reached,
        register the tools the operator last found on it, whose calls then say why they fail."""
        self._task = asyncio.create_task(self._keep(), name=f"mcp {self.cap.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait)
        if self.client is None:
            logger.warning("capability %s: MCP server %s unreachable at start: %s", self.cap.name, self.url,
                           self.error)
            self._sync([t for t in self.cap.status.tools])

    async def close(self) -> None:
        self._closing = True
        self._drop.set()
        self._wanted.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)

    async def call(self, tool: McpServerTool, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call a tool; a server that is down gives an error result the model can act on."""
        client = await self._client()
        if client is not None:
            try:
                result = await client.call_tool(tool.remote, arguments, read_timeout_seconds=self.timeout)
            except TimeoutError:
                return ToolResult.error(f"{tool.name}: the MCP server at {self.url} did not answer within "
                                        f"{self.timeout:g} s", summary=f"{tool.name}: timed out")
            except Exception as exc:  # noqa: BLE001 - any transport failure means the session is gone
                self._broken(f"{type(exc).__name__}: {exc}")
            else:
                return _result(tool.name, result, ctx.output_limit)
        return ToolResult.error(
            f"{tool.name}: the MCP server of capability {self.cap.name} at {self.url} is unreachable "
            f"({self.error}). The call was not made; go on without this tool, or try again later.",
            summary=f"{tool.name}: server unreachable")

    async def _client(self) -> Client | None:
        """The open session, after one reconnection attempt when there is none."""
        if self.client is None and not self._closing:
            self._connected.clear()
            self._wanted.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self.timeout)
        return self.client

    def _broken(self, why: str) -> None:
        logger.warning("capability %s: MCP session with %s broke: %s", self.cap.name, self.url, why)
        self.client, self.error = None, why
        self._drop.set()

    async def _keep(self) -> None:
        """Hold the session; once it is gone, open the next one when a call asks for it."""
        while not self._closing:
            self._wanted.clear()
            self._drop.clear()
            try:
                await self._session()
            except Exception as exc:  # noqa: BLE001 - unreachable, refused, broken: all wait for the next call
                self.client, self.error = None, _describe(exc)
            self._connected.set()
            await self._wanted.wait()

    async def _session(self) -> None:
        # Calls are bounded by read_timeout_seconds; the HTTP read timeout only has to outlast the
        # quiet spells of the stream that announces tool list changes (the SDK's own default).
        http = httpx2.AsyncClient(headers=self.headers, timeout=httpx2.Timeout(10, read=max(self.timeout, 300)))
        info = mcp_types.Implementation(name="overseer-agent", version=__version__)
        async with http, Client(streamable_http_client(self.url, http_client=http), client_info=info,
                                read_timeout_seconds=self.timeout, message_handler=self._on_message) as client:
            self.protocol_version = client.protocol_version
            await self._refresh(client)
            self.client, self.error = client, None
            self._connected.set()
            logger.info("capability %s: MCP session with %s (protocol %s), %d tools", self.cap.name, self.url,
                        client.protocol_version, len(self._tools))
            if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                listener = asyncio.create_task(self._listen(client))
                await self._drop.wait()
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
            else:  # earlier versions announce changes as notifications (see _on_message)
                await self._drop.wait()
        self.client = None

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as events:
                async for _ in events:
                    await self._refresh(client)
        except ListenNotSupportedError as exc:  # the server keeps the list it gave first
            logger.info("capability %s: no tool list changes from %s: %s", self.cap.name, self.url, exc)
        except Exception as exc:  # noqa: BLE001 - the stream broke: so did the session
            self._broken(_describe(exc))

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification) and self.client is not None:
            await self._refresh(self.client)

    async def _refresh(self, client: Client) -> None:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        self._sync(offered(self.cap, tools))

    def _sync(self, tools: list[mcp_types.Tool] | list[str]) -> None:
        """Make the registry offer exactly these tools of the server."""
        assert self.cap.spec.mcp is not None
        risks = self.cap.spec.mcp.tool_risk
        fresh: dict[str, McpServerTool] = {}
        for item in tools:
            remote = item if isinstance(item, str) else item.name
            fresh[tool_name(self.cap.name, remote)] = McpServerTool(self, item, risks.get(remote, self.cap.spec.risk))
        for name in set(self._tools) - set(fresh):
            self.registry.unregister(name)
        for name, tool in list(fresh.items()):
            if name in self._tools:  # ours: replaced with the server's current definition
                self.registry.unregister(name)
            try:
                self.registry.register(tool)
            except ValueError as exc:  # a schema the registry cannot check, or a name taken by another tool
                logger.warning("capability %s: tool %s of %s not offered: %s", self.cap.name, tool.remote, self.url,
                               exc)
                fresh.pop(name)
        added, removed = set(fresh) - set(self._tools), set(self._tools) - set(fresh)
        if self._tools and (added or removed):
            logger.info("capability %s: tool list changed: added %s, removed %s", self.cap.name,
                        sorted(added) or "none", sorted(removed) or "none")
        self._tools = fresh


def _result(name: str, result: mcp_types.CallToolResult, limit: int) -> ToolResult:
    parts = []
    for item in result.content:
        if isinstance(item, mcp_types.TextContent):
            parts.append(item.text)
        else:
            parts.append(f"[{item.type} content]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        text = str(result.structured_content)
    if len(text) > limit:
        text = text[:limit] + f"\n[cut at {limit} characters]"
    return ToolResult(text, is_error=result.is_error, summary=f"{name}: {'error' if result.is_error else 'done'}")


def _describe(exc: BaseException) -> str:
    """The innermost useful reason (the SDK wraps transport errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
