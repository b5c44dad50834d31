"""/healthz and /metrics of a goal pod.

Served by asyncio's own server: two GET paths read by the kubelet's probe and by Prometheus
need no web framework, and aiohttp's import cost every goal's start CPU (kube_client)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import ITERATION

MAX_HEADER_BYTES = 16384
"""A request whose line and headers exceed this is refused (431): probes and scrapes send a few hundred."""


class HealthServer:
    """Healthy while the loop keeps making progress: an iteration within stale_after seconds
    (a model call or tool can be slow, so the window is generous)."""

    def __init__(self, port: int, stale_after: float) -> None:
        self.port = port
        self.stale_after = stale_after
        self._server: asyncio.Server | None = None
        self._progress: Callable[[], int] = lambda: 0
        self._last = (0, time.monotonic())

    async def start(self, progress: Callable[[], int]) -> None:
        self._progress = progress
        if not self.port:
            return
        self._server = await asyncio.start_server(self._serve, "0.0.0.0", self.port, limit=MAX_HEADER_BYTES)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def healthy(self) -> bool:
        now, iteration = time.monotonic(), self._progress()
        if iteration != self._last[0]:
            self._last = (iteration, now)
        return now - self._last[1] < self.stale_after

    def answer(self, method: str, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request."""
        route = target.split("?", 1)[0]
        if route not in ("/healthz", "/metrics"):
            return 404, "text/plain; charset=utf-8", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if route == "/metrics":
            ITERATION.set(self._progress())
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        ok = self.healthy()
        return (200, "text/plain; charset=utf-8", b"ok\n") if ok else (503, "text/plain; charset=utf-8",
                                                                         b"no progress\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (answered with Connection: close)."""
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                status, kind, body = self.answer(method, target)
            except (asyncio.LimitOverrunError, ValueError):
                status, kind, body, method = 431, "text/plain; charset=utf-8", b"request too large or malformed\n", ""
            reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
                       503: "Service Unavailable"}
            writer.write(f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}"
                         f"\r\nConnection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass  # the client went away or said nothing: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
