"""What agent pods share through Redis: the model API rate limit, live events, steering.

Redis is a convenience, never a dependency. Every call here either finishes within the
client's short timeouts or is skipped while Redis is known to be down, so a missing,
stopped or silent Redis never stalls the agent loop:

- `RateLimiter` falls back to an in-process limiter with its share of the limits.
- `EventStream.publish` buffers the most recent events and delivers them later.
- `SteeringQueue.drain` returns no messages.

Keys:

    overseer:ratelimit:{<32 hex digits of the API key's SHA-256>}:requests|tokens|used
    overseer:goal:<namespace>/<goal>:events      a stream, trimmed to about 10000 entries
    overseer:goal:<namespace>/<goal>:steering    a list of JSON messages, oldest first
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # redis is imported only when a Redis URL is given: about 0.3 s of CPU at every start
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)


def _unavailable() -> tuple[type[BaseException], ...]:
    """What "Redis is not there" looks like: refused or timed-out connections, a server that is
    loading or read-only, and anything else the client raises instead of answering. (Only a
    client, which imported redis already, raises these.)"""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)

Mode = Literal["shared", "local"]


def connect(url: str | None, *, connect_timeout: float = 0.5, timeout: float = 1.0) -> Redis | None:
    """A Redis client for url with short timeouts and no retries, or None when url is empty.

    The client connects lazily: a Redis that is down now may answer later, and the users
    of the client fall back and recover on their own.
    """
    if not url:
        return None
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        # The client's default retries back off for seconds; here a failure is reported
        # at once and the caller decides (fall back, buffer, skip).
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=True,
    )


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_event(entry_id: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    """A stream entry as EventStream.follow yields it: id, type, ts and decoded data."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        data = json.loads(values.get("data", "null"))
    except ValueError:
        data = values.get("data")
    return {"id": _text(entry_id), "type": values.get("type", ""), "ts": values.get("ts", ""), "data": data}


class _Outage:
    """Remembers that Redis failed, so callers skip it for a while instead of waiting on timeouts."""

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self.since: float | None = None
        self._next_try = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def may_try(self) -> bool:
        return self.since is None or time.monotonic() >= self._next_try

    def seconds_to_next_try(self) -> float:
        return 0.0 if self.since is None else max(0.0, self._next_try - time.monotonic())

    def failed(self) -> bool:
        """Record a failure; True when this starts an outage."""
        now = time.monotonic()
        self._next_try = now + self.retry_seconds
        if self.since is None:
            self.since = now
            return True
        return False

    def recovered(self) -> bool:
        """Record a success; True when this ends an outage."""
        was_down = self.since is not None
        self.since = None
        return was_down


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


class RateLimiter:
    """Requests and tokens per window for one model API key, shared by every pod using the key.

    A sliding-window log kept by one Lua script (see _ACQUIRE): no window of
    `window_seconds`, wherever it starts, holds more grants or tokens than the limits.

    Limits hold over any `window_seconds` (60 matches the provider's per-minute limits;
    a shorter window scales the whole limiter down, for tests). While Redis is unavailable
    the limiter grants from an in-process window with the limits divided by
    `expected_peers`, retries Redis every `retry_seconds`, and goes back to the shared
    window when Redis answers. Only a hash of the API key reaches Redis.
    """

    def __init__(
        self,
        redis: Redis | None,
        api_key: str,
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
        self.key_hash = hashlib.sha256(api_key.encode()).hexdigest()[:32]
        # The hash tag keeps all three keys in one Redis Cluster slot, as the script needs.
        prefix = f"overseer:ratelimit:{{{self.key_hash}}}"
        self._keys = [f"{prefix}:requests", f"{prefix}:tokens", f"{prefix}:used"]
        self._redis = redis
        self._acquire_script = redis.register_script(_ACQUIRE) if redis is not None else None
        self._settle_script = redis.register_script(_SETTLE) if redis is not None else None
        self._outage = _Outage(retry_seconds)
        self._local = _LocalWindow(max(1, requests_per_minute // expected_peers),
                                   max(1, tokens_per_minute // expected_peers), window_seconds)
        # Grants not settled yet, oldest first, so settle(estimated, actual) finds its grant.
        self._unsettled: collections.deque[tuple[int, Grant]] = collections.deque(maxlen=10_000)

    @property
    def mode(self) -> Mode:
        """'shared' while the limits are kept in Redis, 'local' while kept in this process."""
        return "shared" if self._redis is not None and not self._outage.down else "local"

    async def acquire(self, estimated_tokens: int) -> Grant:
        """Wait until one more request with about estimated_tokens fits both limits, and record it.

        An estimate above the token limit is capped at the limit: such a request waits
        for an empty window instead of forever.
        """
        estimated_tokens = max(0, int(estimated_tokens))
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
                except _unavailable() as exc:
                    if self._outage.failed():
                        logger.warning("Rate limiter %s: Redis unavailable (%s); limiting locally to "
                                       "1/%d of the limits", self.key_hash[:8], _reason(exc),
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
        except _unavailable() as exc:
            # The grant ages out of the window on its own; the next acquire falls back.
            logger.debug("Rate limiter %s: could not settle grant %s: %s", self.key_hash[:8], grant.id, exc)


# --------------------------------------------------------------------------------------
# Live event stream
# --------------------------------------------------------------------------------------


class EventType(StrEnum):
    """The kinds of events a running goal publishes."""

    TURN = "turn"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    PHASE = "phase"
    END = "end"


def goal_key(namespace: str, goal: str, what: str) -> str:
    """The Redis key of a goal's `events` stream or `steering` queue."""
    return f"overseer:goal:{namespace}/{goal}:{what}"


class EventStream:
    """The live event stream of one goal: the agent publishes, `kubectl overseer logs -f` follows.

    While Redis is unavailable, publish keeps the newest `buffer_size` events in memory
    (older ones are dropped and counted in `dropped`) and delivers them, in order, on the
    first publish or flush after Redis answers again. Redis is retried at most every
    `retry_seconds`, so publishing never waits on a dead server more than once per period.
    """

    def __init__(
        self,
        redis: Redis | None,
        namespace: str,
        goal: str,
        *,
        maxlen: int = 10_000,
        buffer_size: int = 1000,
        retry_seconds: float = 5.0,
        retention_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.namespace = namespace
        self.goal = goal
        self.key = goal_key(namespace, goal, "events")
        self.maxlen = maxlen
        self.retention_seconds = retention_seconds
        self._redis = redis
        self._buffer: collections.deque[dict[str, str]] = collections.deque()
        self._buffer_size = buffer_size
        self._outage = _Outage(retry_seconds)
        self._lock = asyncio.Lock()
        self.dropped = 0

    @property
    def buffered(self) -> int:
        """Events waiting for Redis to come back."""
        return len(self._buffer)

    def _encode(self, event: Mapping[str, Any]) -> dict[str, str]:
        kind = event.get("type")
        if not kind:
            raise ValueError(f"Goal {self.namespace}/{self.goal}: event has no type: {dict(event)!r}")
        if "data" in event:
            data = event["data"]
        else:
            data = {k: v for k, v in event.items() if k not in ("type", "ts")}
        return {"type": str(kind), "ts": str(event.get("ts") or _now_iso()),
                "data": json.dumps(data, default=str)}

    async def publish(self, event: Mapping[str, Any]) -> None:
        """Append an event: `type` (see EventType), `ts` (now unless given) and `data`.

        `data` is event["data"] if present, else the event's other keys. Never raises
        because Redis is unavailable.
        """
        fields = self._encode(event)
        if self._redis is None:
            return
        self._buffer.append(fields)
        self._trim()
        await self.flush()

    def _trim(self) -> None:
        while len(self._buffer) > self._buffer_size:
            self._buffer.popleft()
            self.dropped += 1

    async def flush(self) -> bool:
        """Deliver buffered events unless Redis is known to be down; True when none are left."""
        if self._redis is None or not self._outage.may_try():
            return not self._buffer
        async with self._lock:
            try:
                while self._buffer:
                    # Out of the buffer while in flight: a publish that overflows the buffer
                    # meanwhile drops the oldest event waiting, not this one.
                    fields = self._buffer.popleft()
                    try:
                        await self._redis.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
                    except BaseException:
                        self._buffer.appendleft(fields)
                        self._trim()
                        raise
                    if fields["type"] == EventType.END:
                        await self._redis.expire(self.key, self.retention_seconds)
            except _unavailable() as exc:
                if self._outage.failed():
                    logger.warning("Goal %s/%s: event stream unavailable (%s); buffering up to %d events",
                                   self.namespace, self.goal, _reason(exc), self._buffer_size)
                return False
            if self._outage.recovered():
                logger.info("Goal %s/%s: event stream delivered its buffered events", self.namespace, self.goal)
            return True

    async def follow(self, from_start: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Yield events (id, type, ts, data) as they arrive, from the first one or only new ones.

        Ends after yielding an `end` event, or at once when only new events are wanted and
        the goal has already ended. Survives Redis outages, resuming after the last event seen.
        """
        if self._redis is None:
            return
        timeout = self._redis.connection_pool.connection_kwargs.get("socket_timeout") or 2.0
        block_ms = max(10, min(1000, int(timeout * 500)))  # the read must return before the socket times out
        last: str | None = "0-0" if from_start else None
        while True:
            try:
                if last is None:
                    newest = await self._redis.xrevrange(self.key, count=1)
                    if newest and decode_event(*newest[0])["type"] == EventType.END:
                        return
                    last = _text(newest[0][0]) if newest else "0-0"
                reply = await self._redis.xread({self.key: last}, count=100, block=block_ms)
            except _unavailable() as exc:
                logger.debug("Goal %s/%s: following events: %s", self.namespace, self.goal, exc)
                await asyncio.sleep(min(self._outage.retry_seconds, 1.0))
                continue
            streams = reply.items() if isinstance(reply, dict) else (reply or [])
            for _key, entries in streams:
                if entries and entries[0] and not isinstance(entries[0][0], (str, bytes)):
                    entries = entries[0]  # RESP3 wraps the entries once more
                for entry_id, fields in entries:
                    event = decode_event(entry_id, fields)
                    last = event["id"]
                    yield event
                    if event["type"] == EventType.END:
                        return


# --------------------------------------------------------------------------------------
# Steering queue
# --------------------------------------------------------------------------------------


class SteeringUnavailable(RuntimeError):
    """The steering queue could not take a message because Redis did not answer."""


@dataclass(frozen=True)
class SteeringMessage:
    """A message a person sent to a running goal."""

    text: str
    author: str
    ts: str


class SteeringQueue:
    """Messages for a running goal, delivered oldest first and to exactly one reader.

    Drain is one MULTI/EXEC (read everything, delete the list), so two readers never
    receive the same message. While Redis is unavailable, drain returns no messages
    (retrying Redis at most every `retry_seconds`) and push raises SteeringUnavailable.
    """

    def __init__(
        self,
        redis: Redis | None,
        namespace: str,
        goal: str,
        *,
        retry_seconds: float = 5.0,
        retention_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.namespace = namespace
        self.goal = goal
        self.key = goal_key(namespace, goal, "steering")
        self.retention_seconds = retention_seconds
        self._redis = redis
        self._outage = _Outage(retry_seconds)

    async def push(self, text: str, author: str) -> SteeringMessage:
        """Queue a message for the goal's agent."""
        message = SteeringMessage(text=text, author=author, ts=_now_iso())
        if self._redis is None:
            raise SteeringUnavailable(f"Goal {self.namespace}/{self.goal}: no Redis is configured for steering")
        payload = json.dumps({"text": message.text, "author": message.author, "ts": message.ts})
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(self.key, payload)
                pipe.expire(self.key, self.retention_seconds)
                await pipe.execute()
        except _unavailable() as exc:
            raise SteeringUnavailable(
                f"Goal {self.namespace}/{self.goal}: steering queue unavailable: {_reason(exc)}") from exc
        return message

    async def drain(self) -> list[SteeringMessage]:
        """Take every queued message, oldest first; [] when none or Redis is unavailable."""
        if self._redis is None or not self._outage.may_try():
            return []
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self.key, 0, -1)
                pipe.delete(self.key)
                raw, _ = await pipe.execute()
        except _unavailable() as exc:
            if self._outage.failed():
                logger.warning("Goal %s/%s: steering queue unavailable (%s)", self.namespace, self.goal,
                               _reason(exc))
            return []
        self._outage.recovered()
        messages = []
        for item in raw:
            try:
                value = json.loads(_text(item))
                messages.append(SteeringMessage(text=str(value["text"]), author=str(value.get("author", "")),
                                                ts=str(value.get("ts", ""))))
            except (ValueError, KeyError, TypeError):
                logger.warning("Goal %s/%s: ignoring a malformed steering message: %r",
                               self.namespace, self.goal, item)
        return messages


class SteeringPoller:
    """Drains a goal's steering queue in the background every `interval` seconds and keeps
    the messages for the loop, so no iteration waits on Redis for them: `take` is what the
    loop is given as its steering source."""

    def __init__(self, queue: SteeringQueue, interval: float = 1.0) -> None:
        self.queue = queue
        self.interval = interval
        self._taken: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="steering")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def take(self) -> list[str]:
        """The texts drained since the last call, oldest first."""
        taken, self._taken = self._taken, []
        return taken

    async def _poll(self) -> None:
        while True:
            self._taken.extend(m.text for m in await self.queue.drain())
            await asyncio.sleep(self.interval)
