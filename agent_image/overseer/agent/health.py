"""/healthz and /metrics of a goal pod."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import ITERATION


class HealthServer:
    """Healthy while the loop keeps making progress: an iteration within stale_after seconds
    (a model call or tool can be slow, so the window is generous)."""

    def __init__(self, port: int, stale_after: float) -> None:
        self.port = port
        self.stale_after = stale_after
        self._runner: web.AppRunner | None = None
        self._progress: Callable[[], int] = lambda: 0
        self._last = (0, time.monotonic())

    async def start(self, progress: Callable[[], int]) -> None:
        self._progress = progress
        if not self.port:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def healthy(self) -> bool:
        now, iteration = time.monotonic(), self._progress()
        if iteration != self._last[0]:
            self._last = (iteration, now)
        return now - self._last[1] < self.stale_after

    async def _healthz(self, _: web.Request) -> web.Response:
        ok = self.healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "no progress\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        ITERATION.set(self._progress())
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
