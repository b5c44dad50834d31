"""The gateway: its routes, its server, and the clients it holds for its lifetime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from overseer.kube import Credentials, Kube
from overseer.prices import PriceTable

from .budget import Meter
from .counters import RedisCounters
from .errors import error_answer
from .http import IDLE_SECONDS, REQUEST_SECONDS, Handler, Request, Response, Server
from .identity import Identity
from .ledger import Ledger
from .pool import UpstreamPool
from .proxy import Proxy
from .ratelimits import RateLimits
from .scopes import NamespaceBudgets
from .settings import GatewaySettings
from .status import CostStatus
from .upstream import Targets

MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the Messages API's own request size limit


class Gateway:
    """The gateway's server and the clients it holds for its lifetime: opened by `start`, closed by `stop`."""

    def __init__(self, settings: GatewaySettings, login: Callable[[], Awaitable[Credentials]]) -> None:
        self._settings = settings
        self._kube = kube = Kube(login, field_manager="overseer-gateway")
        self._ledger = ledger = Ledger(settings.database_url) if settings.database_url else None
        self._status = status = CostStatus(kube, ledger, settings.status_interval_seconds) if ledger else None
        self._redis = redis = aioredis.from_url(settings.redis_url, socket_timeout=1,
                                                socket_connect_timeout=1) if settings.redis_url else None
        counters = RedisCounters(redis, hold_seconds=settings.upstream_timeout_seconds + 60) if ledger and redis else None
        self._meter = Meter(ledger, PriceTable(settings.prices_file), settings.budget_refresh_seconds,
                            on_spend=status.spent if status else None, counters=counters,
                            namespaces=NamespaceBudgets(settings.budgets_file), lease_calls=settings.budget_lease_calls,
                            lease_seconds=settings.budget_lease_seconds) if ledger else None
        limits = RateLimits(redis, settings)
        self.proxy = Proxy(Identity(kube, settings.token_cache_seconds), Targets(kube, settings), meter=self._meter,
                           limits=limits if limits.enabled else None)
        self.server: Server | None = None

    async def start(self) -> Server:
        self.proxy.pool = upstream_pool(self._settings)  # made on the loop that serves
        if self._ledger is not None and self._status is not None:
            await self._ledger.open()
            self._status.start()
        self.server = await serve(self.proxy, self._settings.host, self._settings.port,
                                  self._settings.client_idle_seconds, self._settings.client_request_seconds)
        return self.server

    async def stop(self, timeout: float = 30) -> None:
        """Answer the calls in flight (at most `timeout` seconds), settle them, close the clients."""
        if self.server is not None:
            await self.server.close(timeout)
        await self.proxy.drain()
        if self._meter is not None:
            await self._meter.close()
        if self.proxy.pool is not None:
            await self.proxy.pool.close()
        if self._ledger is not None and self._status is not None:
            await self._status.stop()
            await self._ledger.close()
        if self._redis is not None:
            await self._redis.aclose()
        await self._kube.close()


def upstream_pool(settings: GatewaySettings) -> UpstreamPool:
    """The one pooled upstream client: keep-alive connections shared by every Agent and request."""
    return UpstreamPool(settings.upstream_connections, settings.upstream_timeout_seconds,
                        settings.upstream_connect_seconds)


async def serve(proxy: Proxy, host: str, port: int, idle_seconds: float = IDLE_SECONDS,
                request_seconds: float = REQUEST_SECONDS) -> Server:
    """The Messages API endpoints, /healthz, and API-shaped 404s for everything else, on host:port
    (0: a free port, then `server.port`)."""
    return await Server(routes(proxy), MAX_REQUEST_BYTES, error_answer, idle_seconds, request_seconds).start(host, port)


def routes(proxy: Proxy) -> Handler:
    async def route(request: Request) -> Response | None:
        if request.method == "POST":
            if request.path == "/v1/messages":
                return await proxy.messages(request)
            if request.path == "/v1/messages/count_tokens":
                return await proxy.count_tokens(request)
        elif request.path == "/healthz" and request.method == "GET":
            return _OK
        return error_answer(404, f"Not found: {request.method} {request.path} (the gateway serves "
                                 "POST /v1/messages and POST /v1/messages/count_tokens)")

    return route


_OK = Response(200, [("content-type", "text/plain; charset=utf-8")], b"ok")
