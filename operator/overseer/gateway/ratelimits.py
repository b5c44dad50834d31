"""Rate limits of model calls, requests and tokens per minute, per Agent and for all Agents together,
kept in Redis so every gateway replica shares them (the sliding window of overseer.ratelimit).

A call that does not fit waits up to `rate_limit_wait_seconds`; one that would wait longer gets 429
rate_limit_error with retry-after, which the agent's SDK honours and retries. At the start a call
counts its input estimated from the request's size; when it is settled its real input and output
replace the estimate, so a minute's window holds what calls used. Without Redis, or while it does
not answer, each replica limits alone to its share (the limits divided by `rate_limit_replicas`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from overseer.ratelimit import Grant, RateLimited, RateLimiter

from . import metrics
from .errors import GatewayError
from .identity import Caller
from .settings import GatewaySettings

if TYPE_CHECKING:
    from redis.asyncio import Redis

BYTES_PER_TOKEN = 4
UNLIMITED = 10**12  # a limit left at 0 (none) while the other one is set


@dataclass(frozen=True, slots=True)
class Limit:
    """One limiter and who it limits, for the refusal's message."""

    limiter: RateLimiter
    who: str
    setting: str  # the settings that set it, e.g. OVERSEER_GATEWAY_AGENT_REQUESTS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class Held:
    """A call's grants, to settle with what it used."""

    grants: list[tuple[Limit, Grant]]
    estimate: int


def _limiter(redis: Redis | None, name: str, requests: int, tokens: int, settings: GatewaySettings) -> RateLimiter:
    return RateLimiter(redis, name, requests_per_minute=requests or UNLIMITED, tokens_per_minute=tokens or UNLIMITED,
                       window_seconds=settings.rate_limit_window_seconds, expected_peers=settings.rate_limit_replicas)


class RateLimits:
    """The global limit and one per Agent; an Agent's limiter is made on its first call."""

    def __init__(self, redis: Redis | None, settings: GatewaySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._wait = settings.rate_limit_wait_seconds
        self._global = None
        if settings.requests_per_minute or settings.tokens_per_minute:
            self._global = Limit(_limiter(redis, "gateway:all", settings.requests_per_minute,
                                          settings.tokens_per_minute, settings),
                                 "all Agents together", "OVERSEER_GATEWAY_REQUESTS_PER_MINUTE / _TOKENS_PER_MINUTE")
        self._per_agent = bool(settings.agent_requests_per_minute or settings.agent_tokens_per_minute)
        self._agents: dict[tuple[str, str], Limit] = {}

    @property
    def enabled(self) -> bool:
        return self._global is not None or self._per_agent

    def _limits(self, caller: Caller) -> list[Limit]:
        found = []
        if self._per_agent:
            key = (caller.namespace, caller.agent)
            limit = self._agents.get(key)
            if limit is None:
                s = self._settings
                limit = self._agents[key] = Limit(
                    _limiter(self._redis, f"gateway:agent:{caller.namespace}/{caller.agent}",
                             s.agent_requests_per_minute, s.agent_tokens_per_minute, s),
                    f"Agent {caller.namespace}/{caller.agent}",
                    "OVERSEER_GATEWAY_AGENT_REQUESTS_PER_MINUTE / _AGENT_TOKENS_PER_MINUTE")
            found.append(limit)
        if self._global is not None:
            found.append(self._global)
        return found

    async def acquire(self, caller: Caller, body: bytes) -> Held:
        """Grants of every limit for this call, waiting briefly; GatewayError 429 when that is not enough."""
        estimate = len(body) // BYTES_PER_TOKEN
        held = Held([], estimate)
        deadline = time.monotonic() + self._wait
        for limit in self._limits(caller):
            try:
                grant = await limit.limiter.acquire(estimate, max_wait=max(0.0, deadline - time.monotonic()))
            except RateLimited as e:
                await self.release(held)
                metrics.RATE_LIMITED.labels(caller.namespace, caller.agent).inc()
                lim = limit.limiter
                raise GatewayError(429, f"rate limit of {limit.who} reached ({_per_minute(lim)}, set by {limit.setting}"
                                        f"); retry in {e.retry_after:.1f}s", retry_after=e.retry_after) from None
            held.grants.append((limit, grant))
        return held

    async def release(self, held: Held) -> None:
        """A call that was not made: its grants keep their request but count no tokens."""
        await self.settle(held, {})

    async def settle(self, held: Held, usage: dict[str, Any]) -> None:
        used = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                                     "cache_creation_input_tokens"))
        for limit, grant in held.grants:
            await limit.limiter.settle(held.estimate, used, grant)


def _per_minute(limiter: RateLimiter) -> str:
    parts = [f"{n} {what}" for n, what in ((limiter.requests_per_minute, "requests"),
                                           (limiter.tokens_per_minute, "tokens")) if n < UNLIMITED]
    window = "minute" if limiter.window_seconds == 60 else f"{limiter.window_seconds:g} seconds"
    return f"{' and '.join(parts)} per {window}"
