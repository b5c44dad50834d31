"""A real MCP server for tests, built with the same SDK the agent uses (`mcp`), served over
streamable HTTP on loopback by uvicorn, in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.subscriptions import ToolsListChanged
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class ToolServer:
    """A weather MCP server: `forecast(city)`, `alerts(region)` and `unlock()`, which adds
    `shout(text)` and announces the change. Records the headers of every request."""

    port: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.mcp = MCPServer("weather", log_level="WARNING")
        calls = self.calls

        @self.mcp.tool()
        def forecast(city: str, days: int = 1) -> str:
            """The weather forecast for a city."""
            calls.append(("forecast", {"city": city, "days": days}))
            return f"sunny in {city} for {days} day(s)"

        @self.mcp.tool()
        def alerts(region: str) -> str:
            """Weather alerts for a region."""
            calls.append(("alerts", {"region": region}))
            return f"no alerts in {region}"

        @self.mcp.tool()
        async def unlock(ctx: Context) -> str:
            """Unlock the shout tool."""
            calls.append(("unlock", {}))
            self.add_shout()
            await ctx.notify_tools_changed()
            return "shout unlocked"

    def add_shout(self) -> None:
        self.mcp.add_tool(lambda text: text.upper(), name="shout", description="Upper-case a text")

    async def announce(self) -> None:
        """Tell listening clients the tool list changed (outside of any request)."""
        await self.mcp._subscriptions.publish(ToolsListChanged())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> ToolServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        app = self.mcp.streamable_http_app()
        self._server = uvicorn.Server(uvicorn.Config(self._recording(app), log_level="warning", lifespan="on"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        """Stop serving (the port is kept, so start() serves on it again)."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await self._task
        self._server = self._task = None

    def _recording(self, app: ASGIApp) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)
        return record


class ThreadedToolServer:
    """A ToolServer in a thread of its own, for tests that do not run an event loop (e2e)."""

    def __init__(self) -> None:
        import threading

        self.server = ToolServer()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="mcp-server", daemon=True)
        self._thread.start()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> ThreadedToolServer:
        self._run(self.server.start())
        return self

    def stop(self) -> None:
        self._run(self.server.stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return self.server.url
