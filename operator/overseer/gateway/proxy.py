"""The Messages API endpoints: authenticate the goal pod, forward to its Agent's model endpoint
with the Agent's key, pass the answer back (server-sent events as they arrive), and hand the
usage to the meter."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from . import metrics
from .errors import GatewayError, error_answer, request_id
from .http import Request, Response
from .identity import Caller, Identity, bearer_token
from .pool import Upstream, UpstreamError, UpstreamPool
from .ratelimits import Held, RateLimits
from .upstream import Target, Targets
from .usage import StreamUsage, message_usage

log = logging.getLogger(__name__)

# Headers a client may send on to the model API; its own credentials never go further.
_REQUEST_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "accept")
# Headers of the model's answer the client gets back. Content-Length, Transfer-Encoding and
# Content-Encoding are the gateway's own business (it asks for the body unencoded).
_RESPONSE_HEADERS = frozenset(("content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry",
                               "cache-control"))
_RATELIMIT_PREFIX = "anthropic-ratelimit-"
DEFAULT_VERSION = "2023-06-01"


class Metering(Protocol):
    """Budgets and cost: reserve before a call is forwarded, settle from the usage it reports."""

    async def reserve(self, caller: Caller, target: Target, body: bytes, request_id: str) -> Any:
        """Hold budget for this call; raise GatewayError when it may not be made."""

    async def settle(self, reservation: Any, usage: dict[str, Any], model: str) -> None:
        """Record what the call cost and release what was held beyond it."""


class Proxy:
    def __init__(self, identity: Identity, targets: Targets, pool: UpstreamPool | None = None,
                 meter: Metering | None = None, limits: RateLimits | None = None) -> None:
        self._identity = identity
        self._targets = targets
        self.pool = pool  # the pooled upstream client; set before the first request
        self._meter = meter
        self._limits = limits
        self._settling: set[asyncio.Task[None]] = set()

    async def messages(self, request: Request) -> Response | None:
        return await self._forward(request, "/v1/messages", metered=True)

    async def count_tokens(self, request: Request) -> Response | None:
        return await self._forward(request, "/v1/messages/count_tokens", metered=False)

    async def _forward(self, request: Request, endpoint: str, metered: bool) -> Response | None:
        started = time.perf_counter()
        try:
            return await self._call(request, endpoint, metered)
        finally:
            metrics.REQUESTS.labels(endpoint).observe(time.perf_counter() - started)

    async def _call(self, request: Request, endpoint: str, metered: bool) -> Response | None:
        try:
            caller = await self._identity.caller(bearer_token(request.headers))
            target = await self._targets.target(caller.namespace, caller.agent)
            body = request.body
            rid = request_id()
            reservation = held = None
            limits = self._limits if metered else None
            if limits is not None:
                held = await limits.acquire(caller, body)
            if metered and self._meter is not None:
                try:
                    reservation = await self._meter.reserve(caller, target, body, rid)
                except GatewayError:
                    if limits is not None and held is not None:
                        await limits.release(held)  # not made: its tokens do not count
                    raise
        except GatewayError as refusal:
            metrics.REFUSALS.labels(str(refusal.status), refusal.error_type).inc()
            return refusal.answer()
        assert self.pool is not None
        tap = StreamUsage()  # the usage so far, also when the answer breaks off
        try:
            up = await self.pool.call(target.base_url, endpoint, _upstream_headers(request.headers, target.api_key),
                                      body)
            try:
                return await self._answer(request, up, tap)
            finally:
                up.release()
        except UpstreamError as e:
            if request.connection.closed:
                return None  # the client is gone: nobody to answer
            metrics.UPSTREAM_ERRORS.labels("0").inc()
            log.warning("%s %s: upstream %s failed: %s", caller.goal_key, endpoint, target.base_url, e)
            return error_answer(502, f"the model endpoint {target.base_url} did not answer: {e}")
        finally:
            if reservation is not None or (limits is not None and held is not None):
                # A task of its own, not awaited: the next request on this keep-alive connection would
                # wait for it, and a client that hangs up mid-answer still pays for what it used.
                task = asyncio.get_running_loop().create_task(
                    self._settle(reservation, tap.usage, tap.model, limits, held))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)

    async def _answer(self, request: Request, up: Upstream, tap: StreamUsage) -> Response | None:
        if up.status != 200:
            metrics.UPSTREAM_ERRORS.labels(str(up.status)).inc()
        headers = _client_headers(up.headers)
        if up.event_stream:
            request.connection.start_chunks(up.status, headers)
            if not await up.relay(request.connection, tap):
                # The stream broke upstream after the status line went out: break it here too, so
                # the client sees an incomplete stream (and retries) rather than a clean end.
                request.connection.abort()
            return None
        payload = await up.read()
        if up.status == 200:
            tap.usage = message_usage(payload)
        # Returned, then written before the settling task (created as this returns) runs: the
        # caller has its answer before the call is settled.
        return Response(up.status, headers, payload)

    async def drain(self) -> None:
        """Wait until every answered call is settled (on shutdown)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def _settle(self, reservation: Any, usage: dict[str, Any], model: str,
                      limits: RateLimits | None, held: Held | None) -> None:
        """The budget first, then the rate limits' grants (a call's spend is counted before its
        tokens per minute are given back to others)."""
        try:
            if reservation is not None:
                assert self._meter is not None
                await self._meter.settle(reservation, usage, model)
            if limits is not None and held is not None:
                await limits.settle(held, usage)
        except Exception:
            log.exception("settling a model call failed")


def _upstream_headers(incoming: dict[str, str], api_key: str) -> list[tuple[str, str]]:
    headers = [(name, incoming[name]) for name in _REQUEST_HEADERS if name in incoming]
    if "anthropic-version" not in incoming:
        headers.append(("anthropic-version", DEFAULT_VERSION))
    headers.append(("x-api-key", api_key))
    return headers


def _client_headers(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in upstream
            if (lower := name.lower()) in _RESPONSE_HEADERS or lower.startswith(_RATELIMIT_PREFIX)]
