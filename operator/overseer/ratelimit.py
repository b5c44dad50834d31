"""Model API rate limits (requests and tokens per minute) shared through Redis: by the model
gateway per Agent and for all Agents, and by goal pods that call the model API without a gateway
(one limit per API key).

Without Redis, or while it does not answer, `RateLimiter` falls back to an in-process limiter
with its share of the limits; see overseer.live for what else goal pods keep in Redis.

Keys:

    overseer:ratelimit:{<32 hex digits of the SHA-256 of what is limited>}:requests|tokens|used
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only a client someone made imports redis
    from redis.asyncio import Redis

from overseer.live import Outage, reason, unavailable

logger = logging.getLogger(__name__)

Mode = Literal["shared", "local"]

# --------------------------------------------------------------------------------------
# Rate limiter
# --------------------------------------------------------------------------------------

# A sliding-window log. Every grant is a member of a sorted set scored by the Redis clock
# (microseconds) and carries its token count in a hash; `used` is the sum of those counts.
# A request is granted when, over the last `window` microseconds, fewer than max_requests
# grants were made and used + wanted <= max_tokens. So no window of that length, wherever
# it starts, ever holds more than the limits (settle can only raise a count that was
# already spent). Otherwise the script answers how long until enough old grants leave the
# window. Using Redis's clock keeps pods with skewed clocks consistent.
_ACQUIRE = """
local requests, tokens, used = KEYS[1], KEYS[2], KEYS[3]
local window = tonumber(ARGV[1])
local max_requests = tonumber(ARGV[2])
local max_tokens = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local id = ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local horizon = now - window

local expired = redis.call('ZRANGEBYSCORE', requests, '-inf', horizon)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + (tonumber(redis.call('HGET', tokens, member)) or 0)
    redis.call('HDEL', tokens, member)
  end
  redis.call('ZREMRANGEBYSCORE', requests, '-inf', horizon)
  redis.call('DECRBY', used, freed)
end

local count = redis.call('ZCARD', requests)
local spent = tonumber(redis.call('GET', used)) or 0
if count < max_requests and spent + want <= max_tokens then
  redis.call('ZADD', requests, now, id)
  redis.call('HSET', tokens, id, want)
  redis.call('INCRBY', used, want)
  local ttl = math.floor(window / 1000) * 2 + 1000
  redis.call('PEXPIRE', requests, ttl)
  redis.call('PEXPIRE', tokens, ttl)
  redis.call('PEXPIRE', used, ttl)
  return {1, 0, now}
end

local wait = 0
if count >= max_requests then
  local oldest = redis.call('ZRANGE', requests, count - max_requests, count - max_requests, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now
end
if spent + want > max_tokens then
  local until_free = window
  local freed, start = 0, 0
  local done = false
  while not done do
    local batch = redis.call('ZRANGE', requests, start, start + 99, 'WITHSCORES')
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      freed = freed + (tonumber(redis.call('HGET', tokens, batch[i])) or 0)
      if spent - freed + want <= max_tokens then
        until_free = tonumber(batch[i + 1]) + window - now
        done = true
        break
      end
    end
    start = start + 100
  end
  if until_free > wait then wait = until_free end
end
if wait < 1 then wait = 1 end
return {0, wait, now}
"""

# Correct a grant's token count once the response's usage is known. A grant that already
# left the window is not counted any more and stays forgotten.
_SETTLE = """
local tokens, used = KEYS[1], KEYS[2]
local old = tonumber(redis.call('HGET', tokens, ARGV[1]))
if old == nil then return 0 end
local actual = tonumber(ARGV[2])
redis.call('HSET', tokens, ARGV[1], actual)
redis.call('INCRBY', used, actual - old)
return 1
"""


@dataclass(frozen=True)
class Grant:
    """Permission for one model request: its id, the tokens reserved, where it was granted and when.

    `at` is seconds since the epoch on Redis's clock when shared, the pod's when local.
    """

    id: str
    tokens: int
    mode: Mode
    at: float


class _LocalWindow:
    """The same sliding-window log as the Redis script, in process."""

    def __init__(self, max_requests: int, max_tokens: int, window: float) -> None:
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.window = window
        self._grants: collections.deque[list[Any]] = collections.deque()  # [time, tokens, id]
        self._by_id: dict[str, list[Any]] = {}
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._grants and self._grants[0][0] <= now - self.window:
            _, tokens, grant_id = self._grants.popleft()
            self._used -= tokens
            del self._by_id[grant_id]

    def try_acquire(self, tokens: int, grant_id: str, now: float) -> float:
        """0 when granted, else seconds until it could be."""
        self._expire(now)
        if len(self._grants) < self.max_requests and self._used + tokens <= self.max_tokens:
            entry = [now, tokens, grant_id]
            self._grants.append(entry)
            self._by_id[grant_id] = entry
            self._used += tokens
            return 0.0
        wait = 0.0
        if len(self._grants) >= self.max_requests:
            wait = self._grants[len(self._grants) - self.max_requests][0] + self.window - now
        if self._used + tokens > self.max_tokens:
            freed = 0
            for at, spent, _ in self._grants:
                freed += spent
                if self._used - freed + tokens <= self.max_tokens:
                    wait = max(wait, at + self.window - now)
                    break
        return max(wait, 1e-6)

    def settle(self, grant_id: str, actual: int) -> None:
        entry = self._by_id.get(grant_id)
        if entry is not None:
            self._used += actual - entry[1]
            entry[1] = actual


class RateLimited(Exception):
    """No grant within the longest wait the caller accepts; `retry_after` seconds until one fits."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f}s")
        self.retry_after = retry_after


class RateLimiter:
    """Requests and tokens per window for one `name` (an API key, an Agent), shared by every process
    limiting that name.

    A sliding-window log kept by one Lua script (see _ACQUIRE): no window of
    `window_seconds`, wherever it starts, holds more grants or tokens than the limits.

    Limits hold over any `window_seconds` (60 matches the provider's per-minute limits;
    a shorter window scales the whole limiter down, for tests). While Redis is unavailable
    the limiter grants from an in-process window with the limits divided by
    `expected_peers`, retries Redis every `retry_seconds`, and goes back to the shared
    window when Redis answers. Only a hash of the name reaches Redis.
    """

    def __init__(
        self,
        redis: Redis | None,
        name: str,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        window_seconds: float = 60.0,
        expected_peers: int = 1,
        retry_seconds: float = 5.0,
    ) -> None:
        if requests_per_minute < 1 or tokens_per_minute < 1:
            raise ValueError(f"rate limits must be positive, got requests_per_minute={requests_per_minute}, "
                             f"tokens_per_minute={tokens_per_minute}")
        if window_seconds <= 0 or expected_peers < 1:
            raise ValueError(f"window_seconds must be positive and expected_peers at least 1, "
                             f"got {window_seconds} and {expected_peers}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.window_seconds = window_seconds
        self.expected_peers = expected_peers
        self.key_hash = hashlib.sha256(name.encode()).hexdigest()[:32]
        # The hash tag keeps all three keys in one Redis Cluster slot, as the script needs.
        prefix = f"overseer:ratelimit:{{{self.key_hash}}}"
        self._keys = [f"{prefix}:requests", f"{prefix}:tokens", f"{prefix}:used"]
        self._redis = redis
        self._acquire_script = redis.register_script(_ACQUIRE) if redis is not None else None
        self._settle_script = redis.register_script(_SETTLE) if redis is not None else None
        self._outage = Outage(retry_seconds)
        self._local = _LocalWindow(max(1, requests_per_minute // expected_peers),
                                   max(1, tokens_per_minute // expected_peers), window_seconds)
        # Grants not settled yet, oldest first, so settle(estimated, actual) finds its grant.
        self._unsettled: collections.deque[tuple[int, Grant]] = collections.deque(maxlen=10_000)

    @property
    def mode(self) -> Mode:
        """'shared' while the limits are kept in Redis, 'local' while kept in this process."""
        return "shared" if self._redis is not None and not self._outage.down else "local"

    async def acquire(self, estimated_tokens: int, max_wait: float | None = None) -> Grant:
        """Wait until one more request with about estimated_tokens fits both limits, and record it;
        RateLimited if that would take more than max_wait seconds.

        An estimate above the token limit is capped at the limit: such a request waits
        for an empty window instead of forever.
        """
        estimated_tokens = max(0, int(estimated_tokens))
        deadline = None if max_wait is None else time.monotonic() + max_wait
        while True:
            grant_id = uuid.uuid4().hex
            wait: float | None = None
            if self._acquire_script is not None and self._outage.may_try():
                tokens = min(estimated_tokens, self.tokens_per_minute)
                try:
                    granted, wait_us, now_us = await self._acquire_script(
                        keys=self._keys,
                        args=[round(self.window_seconds * 1_000_000), self.requests_per_minute,
                              self.tokens_per_minute, tokens, grant_id])
                except unavailable() as exc:
                    if self._outage.failed():
                        logger.warning("Rate limiter %s: Redis unavailable (%s); limiting locally to "
                                       "1/%d of the limits", self.key_hash[:8], reason(exc),
                                       self.expected_peers)
                else:
                    if self._outage.recovered():
                        logger.info("Rate limiter %s: Redis answers again; limits are shared", self.key_hash[:8])
                    if granted:
                        return self._granted(Grant(grant_id, tokens, "shared", now_us / 1_000_000), estimated_tokens)
                    wait = wait_us / 1_000_000
            if wait is None:
                tokens = min(estimated_tokens, self._local.max_tokens)
                wait = self._local.try_acquire(tokens, grant_id, time.monotonic())
                if wait == 0:
                    return self._granted(Grant(grant_id, tokens, "local", time.time()), estimated_tokens)
                if self._acquire_script is not None:
                    # Wake up for the next look at Redis rather than sleeping through it.
                    wait = min(wait, max(self._outage.seconds_to_next_try(), 0.001))
            if deadline is not None and time.monotonic() + wait > deadline:
                raise RateLimited(wait)
            # Waiters wake when the oldest grant leaves the window; a little jitter spreads
            # them so they do not all hit Redis in the same instant.
            await asyncio.sleep(wait + random.random() * min(0.002, wait))

    def _granted(self, grant: Grant, estimated: int) -> Grant:
        self._unsettled.append((estimated, grant))
        return grant

    async def settle(self, estimated: int, actual: int, grant: Grant | None = None) -> None:
        """Replace a grant's estimated tokens with the actual usage.

        Without `grant`, the oldest unsettled grant acquired with `estimated` is settled.
        Usage above the estimate is recorded too, and delays later requests accordingly.
        """
        if grant is None:
            for index, (requested, candidate) in enumerate(self._unsettled):
                if requested == estimated:
                    grant = candidate
                    del self._unsettled[index]
                    break
            else:
                return
        else:
            for index, (_, candidate) in enumerate(self._unsettled):
                if candidate.id == grant.id:
                    del self._unsettled[index]
                    break
        actual = max(0, int(actual))
        if grant.mode == "local":
            self._local.settle(grant.id, actual)
            return
        if self._settle_script is None or not self._outage.may_try():
            return
        try:
            await self._settle_script(keys=self._keys[1:], args=[grant.id, actual])
        except unavailable() as exc:
            # The grant ages out of the window on its own; the next acquire falls back.
            logger.debug("Rate limiter %s: could not settle grant %s: %s", self.key_hash[:8], grant.id, exc)
