"""The Messages API endpoints: authenticate the goal pod, forward to its Agent's model endpoint
with the Agent's key, pass the answer back (server-sent events as they arrive), and hand the
usage to the meter."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from . import metrics
from .errors import GatewayError, error_response, request_id
from .identity import Caller, Identity, bearer_token
from .ratelimits import Held, RateLimits
from .upstream import Target, Targets
from .usage import StreamUsage, message_usage

log = logging.getLogger(__name__)

# Headers a client may send on to the model API; its own credentials never go further.
_REQUEST_HEADERS = ("anthropic-version", "anthropic-beta", "content-type", "accept")
# Headers of the model's answer the client gets back. Content-Length and Content-Encoding are
# the gateway's own business (the upstream body arrives decompressed).
_RESPONSE_HEADERS = ("content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry",
                     "cache-control")
_RATELIMIT_PREFIX = "anthropic-ratelimit-"
DEFAULT_VERSION = "2023-06-01"


class Metering(Protocol):
    """Budgets and cost: reserve before a call is forwarded, settle from the usage it reports."""

    async def reserve(self, caller: Caller, target: Target, body: bytes, request_id: str) -> Any:
        """Hold budget for this call; raise GatewayError when it may not be made."""

    async def settle(self, reservation: Any, usage: dict[str, Any], model: str) -> None:
        """Record what the call cost and release what was held beyond it."""


class Proxy:
    def __init__(self, identity: Identity, targets: Targets, session: aiohttp.ClientSession | None = None,
                 meter: Metering | None = None, limits: RateLimits | None = None) -> None:
        self._identity = identity
        self._targets = targets
        self.session = session  # the pooled upstream client; set before the first request
        self._meter = meter
        self._limits = limits
        self._settling: set[asyncio.Task[None]] = set()

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "/v1/messages", metered=True)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "/v1/messages/count_tokens", metered=False)

    async def _forward(self, request: web.Request, endpoint: str, metered: bool) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await self._call(request, endpoint, metered)
        finally:
            metrics.REQUESTS.labels(endpoint).observe(time.perf_counter() - started)

    async def _call(self, request: web.Request, endpoint: str, metered: bool) -> web.StreamResponse:
        try:
            caller = await self._identity.caller(bearer_token(request.headers))
            target = await self._targets.target(caller.namespace, caller.agent)
            body = await request.read()
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
            return refusal.response()
        assert self.session is not None
        headers = _upstream_headers(request.headers, target.api_key)
        tap = StreamUsage()  # the usage so far, also when the answer breaks off
        try:
            async with self.session.post(target.base_url + endpoint, data=body, headers=headers) as up:
                if up.status != 200:
                    metrics.UPSTREAM_ERRORS.labels(str(up.status)).inc()
                out_headers = _client_headers(up.headers)
                if up.content_type == "text/event-stream":
                    return await self._stream(request, up, out_headers, tap)
                payload = await up.read()
                if up.status == 200:
                    tap.usage = message_usage(payload)
                # Sent here rather than returned: the caller has its answer before the call is settled.
                answer = web.Response(body=payload, status=up.status, headers=out_headers)
                await answer.prepare(request)
                await answer.write_eof()
                return answer
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            if request.transport is None or request.transport.is_closing():
                raise  # the client is gone: nobody to answer
            metrics.UPSTREAM_ERRORS.labels("0").inc()
            log.warning("%s %s: upstream %s failed: %r", caller.goal_key, endpoint, target.base_url, e)
            return error_response(502, f"the model endpoint {target.base_url} did not answer: "
                                       f"{type(e).__name__}: {e}")
        finally:
            if reservation is not None or (limits is not None and held is not None):
                # A task of its own, not awaited: the next request on this keep-alive connection would
                # wait for it, and a client that hangs up mid-answer still pays for what it used.
                task = asyncio.get_running_loop().create_task(
                    self._settle(reservation, tap.usage, tap.model, limits, held))
                self._settling.add(task)
                task.add_done_callback(self._settling.discard)

    async def _stream(self, request: web.Request, up: aiohttp.ClientResponse, headers: CIMultiDict[str],
                      tap: StreamUsage) -> web.StreamResponse:
        response = web.StreamResponse(status=up.status, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in up.content.iter_any():
                tap.feed(chunk)
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError):
            # The stream broke upstream after the status line went out: break it here too, so
            # the client sees an incomplete stream (and retries) rather than a clean end.
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response

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


def _upstream_headers(incoming: CIMultiDictProxy[str], api_key: str) -> dict[str, str]:
    headers = {name: incoming[name] for name in _REQUEST_HEADERS if name in incoming}
    headers.setdefault("anthropic-version", DEFAULT_VERSION)
    headers["x-api-key"] = api_key
    return headers


def _client_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if lower in _RESPONSE_HEADERS or lower.startswith(_RATELIMIT_PREFIX):
            out.add(name, value)
    return out
