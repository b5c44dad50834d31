"""The gateway's web application: routes, and the clients it holds for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from overseer.kube import Credentials, Kube

from .budget import Meter
from .counters import RedisCounters
from .errors import error_response
from .identity import Identity
from .ledger import Ledger
from .prices import PriceTable
from .proxy import Proxy
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
    counters = (RedisCounters(settings.redis_url, hold_seconds=settings.upstream_timeout_seconds + 60)
                if ledger and settings.redis_url else None)
    meter = Meter(ledger, PriceTable(settings.prices_file), settings.budget_refresh_seconds,
                  on_spend=status.spent if status else None, counters=counters) if ledger else None
    proxy = Proxy(Identity(kube, settings.token_cache_seconds), Targets(kube, settings), meter=meter)
    add_routes(app, proxy)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        proxy.session = client_session(settings)  # created on the loop that serves
        if ledger is not None and status is not None:
            await ledger.open()
            status.start()
        yield
        await proxy.drain()
        await proxy.session.close()
        if ledger is not None and status is not None:
            await status.stop()
            await ledger.close()
        if counters is not None:
            await counters.close()
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
