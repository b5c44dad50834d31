"""A running goal's live channels in Redis: its event stream and its steering queue.

The agent publishes events and drains steering messages; `kubectl overseer logs` follows the
events and `kubectl overseer steer` pushes messages. Both sides import this module, so the keys
and the wire format are written once. (The model API rate limits are
in overseer.ratelimit.)

Redis is a convenience, never a dependency. Every call here either finishes within the
client's short timeouts or is skipped while Redis is known to be down, so a missing,
stopped or silent Redis never stalls the agent loop:

- `EventStream.publish` buffers the most recent events and delivers them later.
- `SteeringQueue.drain` returns no messages.

Keys:

    overseer:goal:<namespace>/<goal>:events      a stream, trimmed to about 10000 entries
    overseer:goal:<namespace>/<goal>:steering    a list of JSON messages, oldest first
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis is imported only when a Redis URL is given: about 0.3 s of CPU at every start
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

def unavailable() -> tuple[type[BaseException], ...]:
    """What "Redis is not there" looks like: refused or timed-out connections, a server that is
    loading or read-only, and anything else the client raises instead of answering. A function,
    evaluated only when an exception is matched, i.e. after a client (and so redis) exists."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


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


def reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_event(entry_id: Any, fields: Mapping[Any, Any] | None) -> dict[str, Any]:
    """A stream entry as EventStream.follow yields it: id, type, ts and decoded data."""
    values = {_text(k): _text(v) for k, v in (fields or {}).items()}
    try:
        data = json.loads(values.get("data", "null"))
    except ValueError:
        data = values.get("data")
    return {"id": _text(entry_id), "type": values.get("type", ""), "ts": values.get("ts", ""), "data": data}


class Outage:
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
    A goal that ends calls `drain`, which keeps retrying for a while: its last events (the
    `end` above all) would otherwise die with the process when Redis was away at that moment.
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
        self._outage = Outage(retry_seconds)
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
        return await self._deliver()

    async def drain(self, timeout: float, interval: float = 1.0) -> bool:
        """Deliver buffered events, trying Redis every `interval` seconds (not `retry_seconds`:
        nothing else waits now) for up to `timeout` seconds; True when none are left."""
        deadline = time.monotonic() + timeout
        while self._redis is not None and not await self._deliver():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(interval, left))
        return True

    async def _deliver(self) -> bool:
        assert self._redis is not None
        async with self._lock:
            try:
                while self._buffer:
                    # Out of the buffer while in flight: a publish that overflows the buffer
                    # meanwhile drops the oldest event waiting, not this one.
                    fields = self._buffer.popleft()
                    try:
                        await self._xadd(fields)
                    except BaseException:
                        self._buffer.appendleft(fields)
                        self._trim()
                        raise
                    if fields["type"] == EventType.END:
                        await self._redis.expire(self.key, self.retention_seconds)
            except unavailable() as exc:
                if self._outage.failed():
                    logger.warning("Goal %s/%s: event stream unavailable (%s); buffering up to %d events",
                                   self.namespace, self.goal, reason(exc), self._buffer_size)
                return False
            if self._outage.recovered():
                logger.info("Goal %s/%s: event stream delivered its buffered events", self.namespace, self.goal)
            return True

    async def _xadd(self, fields: dict[str, str]) -> None:
        """XADD, once more on a new connection when the pooled one was closed by Redis (a restart
        leaves every idle pooled connection so, and each would otherwise cost a retry period).
        Safe to redo: a server that closed the connection did not answer, and at worst a follower
        sees one event twice. Timeouts are not redone (the event may be in), nor is anything else
        on this client (the steering queue's drain must not run twice)."""
        from redis.exceptions import ConnectionError as ConnectionClosed

        assert self._redis is not None
        entry: dict[Any, Any] = fields  # redis-py types the fields invariantly
        try:
            await self._redis.xadd(self.key, entry, maxlen=self.maxlen, approximate=True)
        except ConnectionClosed:
            await self._redis.connection_pool.disconnect(inuse_connections=False)
            await self._redis.xadd(self.key, entry, maxlen=self.maxlen, approximate=True)

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
            except unavailable() as exc:
                logger.debug("Goal %s/%s: following events: %s", self.namespace, self.goal, exc)
                await asyncio.sleep(min(self._outage.retry_seconds, 1.0))
                continue
            # RESP2 answers a list of [key, entries], RESP3 a dict: typed loosely by redis-py.
            streams: Any = reply.items() if isinstance(reply, dict) else (reply or [])
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


# Move the queue onto the reader's own claim list and answer the claim list, first dropping from
# its head what the reader says it has received. The reader acknowledges by position since the
# claim list began (KEYS[3] holds the position of its head), so an acknowledgement sent twice,
# after an answer that never arrived, drops nothing more.
_DRAIN = """
local base = tonumber(redis.call('GET', KEYS[3]) or '0')
local received = tonumber(ARGV[1])
if received > base then
  redis.call('LTRIM', KEYS[2], received - base, -1)
  base = received
end
local new = redis.call('LRANGE', KEYS[1], 0, -1)
if #new > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #new, 1000 do redis.call('RPUSH', KEYS[2], unpack(new, i, math.min(i + 999, #new))) end
end
redis.call('SET', KEYS[3], base, 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {base, redis.call('LRANGE', KEYS[2], 0, -1)}
"""


class SteeringQueue:
    """Messages for a running goal, delivered oldest first and to exactly one reader.

    A drain moves what is queued onto a claim list of this reader's own, in one script, and
    answers that list; the messages leave it only when the next drain says they arrived. So two
    readers never receive the same message, and an answer lost on the way (a timeout after Redis
    ran the script) is answered again, not lost. While Redis is unavailable, drain returns no
    messages (retrying Redis at most every `retry_seconds`) and push raises SteeringUnavailable.
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
        self._outage = Outage(retry_seconds)
        claim = f"{self.key}:claim:{uuid.uuid4().hex[:12]}"
        self._claim_keys = [self.key, claim, f"{claim}:head"]
        self._received = 0  # messages received since this reader's claim list began
        self._drain = redis.register_script(_DRAIN) if redis is not None else None

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
        except unavailable() as exc:
            raise SteeringUnavailable(
                f"Goal {self.namespace}/{self.goal}: steering queue unavailable: {reason(exc)}") from exc
        return message

    async def drain(self) -> list[SteeringMessage]:
        """Take every queued message, oldest first; [] when none or Redis is unavailable."""
        if self._drain is None or not self._outage.may_try():
            return []
        try:
            head, raw = await self._drain(keys=self._claim_keys, args=[self._received, self.retention_seconds])
        except unavailable() as exc:
            if self._outage.failed():
                logger.warning("Goal %s/%s: steering queue unavailable (%s)", self.namespace, self.goal,
                               reason(exc))
            return []
        self._outage.recovered()
        self._received = int(head) + len(raw)
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
            # Drain first, then look up the list: take() may swap it while the drain waits.
            messages = await self.queue.drain()
            self._taken.extend(m.text for m in messages)
            await asyncio.sleep(self.interval)
