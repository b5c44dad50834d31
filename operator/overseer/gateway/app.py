"""The gateway's web application: routes, and the clients it holds for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web

from overseer.kube import Credentials, Kube
from overseer.prices import PriceTable

from .budget import Meter
from .counters import RedisCounters
from .errors import error_response
from .identity import Identity
from .ledger import Ledger
from .proxy import Proxy
from .ratelimits import RateLimits
from .scopes import NamespaceBudgets
from .settings import GatewaySettings
from .status import CostStatus
from .upstream import Targets, client_session

MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the Messages API's own request size limit


def build_app(settings: GatewaySettings, login: Callable[[], Awaitable[Credentials]]) -> web.Application:
    """The gateway as an aiohttp application; clients open on startup and close on cleanup."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    kube = Kube(login, field_manager="overseer-gateway")
    ledger = Ledger(settings.database_url) if settings.database_url else None
    status = CostStatus(kube, ledger, settings.status_interval_seconds) if ledger else None
    redis = aioredis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1) if settings.redis_url else None
    counters = RedisCounters(redis, hold_seconds=settings.upstream_timeout_seconds + 60) if ledger and redis else None
    meter = Meter(ledger, PriceTable(settings.prices_file), settings.budget_refresh_seconds,
                  on_spend=status.spent if status else None, counters=counters,
                  namespaces=NamespaceBudgets(settings.budgets_file), lease_calls=settings.budget_lease_calls,
                  lease_seconds=settings.budget_lease_seconds) if ledger else None
    limits = RateLimits(redis, settings)
    proxy = Proxy(Identity(kube, settings.token_cache_seconds), Targets(kube, settings), meter=meter,
                  limits=limits if limits.enabled else None)
    add_routes(app, proxy)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        proxy.session = client_session(settings)  # created on the loop that serves
        if ledger is not None and status is not None:
            await ledger.open()
            status.start()
        yield
        await proxy.drain()
        if meter is not None:
            await meter.close()
        await proxy.session.close()
        if ledger is not None and status is not None:
            await status.stop()
            await ledger.close()
        if redis is not None:
            await redis.aclose()
        await kube.close()

    app.cleanup_ctx.append(clients)
    return app


def add_routes(app: web.Application, proxy: Proxy) -> None:
    """The Messages API endpoints, /healthz, and API-shaped 404s for everything else."""
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/v1/messages", proxy.messages)
    app.router.add_post("/v1/messages/count_tokens", proxy.count_tokens)
    app.router.add_route("*", "/{tail:.*}", _not_found)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _not_found(request: web.Request) -> web.Response:
    return error_response(404, f"Not found: {request.method} {request.path} (the gateway serves "
                               "POST /v1/messages and POST /v1/messages/count_tokens)")
