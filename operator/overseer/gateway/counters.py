"""Budget counters shared by every gateway replica, in Redis.

Per budget (a Goal's, an Agent's day, a namespace's day; scopes.py) a hash holds what was spent
(t tokens, u nano-dollars, loaded from the ledger) and the running total of what calls in flight
hold (ht, hu). Each hold is also a member of a sorted set scored by when it lapses, so a replica
that dies mid-call cannot hold budget forever: lapsed holds leave the running totals when the
next call looks. A hold lapses `live_seconds` (30 s) after it was taken unless its replica keeps it
alive (`keep_alive`, every third of that while the call is in flight: leases.py), so a dead
replica's holds are gone within half a minute however long its calls could have taken. Checking every budget of a call and holding it in all of them is one Lua script,
so two replicas never both take the last of a budget, and its cost does not grow with the calls in
flight. A budget whose spend is not in Redis yet is loaded from the ledger first (the script
answers "unknown" and the caller loads it with HSETNX).

A hold may be a lease (leases.py): the script holds up to `units` times the call's worst case,
as many as fit in a `share`-th of what is free in every budget (at least one: the call itself), so
that a replica can pass the next calls of those budgets without a round trip; near a limit a
lease is just the call's own hold. A lease is resized later (what its calls in flight may still
use stays held; what they spent moves into the spend) in one step by the settle script.

Keys (every key of a namespace carries its hash tag, so one script's keys share a Redis Cluster slot):

    overseer:gw:{<namespace>}:<scope>          hash t, u, ht, hu
    overseer:gw:{<namespace>}:<scope>:holds    sorted set of <request id>:<tokens>:<nano-dollars>
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .scopes import Scope

NANO = Decimal(1_000_000_000)

# KEYS: per scope its hash and its holds. ARGV: now, lapse time, request id, tokens, nano-dollars (one
# call's worst case), most units, share, lapse time of a lease (more than one unit), then per scope:
# token limit, nano-dollar limit (-1: none), seconds to keep. Answers {1, units} when held (member <request id>:<units * tokens>:<units * nano>).
_RESERVE = """
local now, lapse, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local want_t, want_u = tonumber(ARGV[4]), tonumber(ARGV[5])
local units, share = tonumber(ARGV[6]), tonumber(ARGV[7])
local n = #KEYS / 2
for i = 1, n do
  local spent, holds = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('HEXISTS', spent, 't') == 0 then return {-1, i} end
  local lapsed = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #lapsed > 0 then
    local lt, lu = 0, 0
    for _, m in ipairs(lapsed) do
      local t, u = string.match(m, ':(%d+):(%d+)$')
      lt, lu = lt + tonumber(t), lu + tonumber(u)
    end
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    redis.call('HINCRBY', spent, 'ht', 0 - lt)  -- 0 - x, not -x: Redis reads -0 as no integer
    redis.call('HINCRBY', spent, 'hu', 0 - lu)
  end
  local v = redis.call('HMGET', spent, 't', 'u', 'ht', 'hu')
  local st, su, ht, hu = tonumber(v[1]), tonumber(v[2]), tonumber(v[3] or '0'), tonumber(v[4] or '0')
  local limit_t, limit_u = tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  if limit_u >= 0 and su + hu + want_u > limit_u then
    return {0, i, 'u', st, v[2], ht, v[4] or '0'}
  end
  if limit_t >= 0 and st + ht + want_t > limit_t then
    return {0, i, 't', st, v[2], ht, v[4] or '0'}
  end
  if limit_u >= 0 and want_u > 0 then
    units = math.min(units, math.floor((limit_u - su - hu) / want_u / share))
  end
  if limit_t >= 0 and want_t > 0 then
    units = math.min(units, math.floor((limit_t - st - ht) / want_t / share))
  end
end
units = math.max(units, 1)
if units > 1 then lapse = tonumber(ARGV[8]) end
local hold_t, hold_u = units * want_t, units * want_u
local member = string.format('%s:%d:%d', id, hold_t, hold_u)
for i = 1, n do
  local spent, holds, keep = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[8 + 3 * i])
  redis.call('ZADD', holds, lapse, member)
  redis.call('HINCRBY', spent, 'ht', hold_t)
  redis.call('HINCRBY', spent, 'hu', hold_u)
  redis.call('EXPIRE', holds, keep)
  redis.call('EXPIRE', spent, keep)
end
return {1, units}
"""
# ARGV: member, hold tokens, hold nano-dollars, spent tokens, spent nano-dollars, and for a lease
# that keeps part of its hold: new member, its tokens, nano-dollars, lapse time. A hold that lapsed
# already left the running totals; it is not taken off twice.
_SETTLE = """
for i = 1, #KEYS / 2 do
  local spent, holds = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('ZREM', holds, ARGV[1]) == 1 then
    redis.call('HINCRBY', spent, 'ht', 0 - tonumber(ARGV[2]))
    redis.call('HINCRBY', spent, 'hu', 0 - tonumber(ARGV[3]))
  end
  if ARGV[6] then
    redis.call('ZADD', holds, tonumber(ARGV[9]), ARGV[6])
    redis.call('HINCRBY', spent, 'ht', ARGV[7])
    redis.call('HINCRBY', spent, 'hu', ARGV[8])
  end
  if redis.call('HEXISTS', spent, 't') == 1 then
    redis.call('HINCRBY', spent, 't', ARGV[4])
    redis.call('HINCRBY', spent, 'u', ARGV[5])
  end
end
return 1
"""
_LOAD = """
if redis.call('HSETNX', KEYS[1], 't', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'u', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True, slots=True)
class Refused:
    """The budget a hold did not fit (index in the scopes, tokens or money), and its state then."""

    scope: int
    money: bool
    spent_tokens: int
    spent_usd: Decimal
    held_tokens: int
    held_usd: Decimal


@dataclass(frozen=True, slots=True)
class Unknown:
    """A budget whose spend Redis does not hold yet: load it from the ledger and try again."""

    scope: int


class CountersUnavailable(Exception):
    """Redis cannot be reached."""


def nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(rounding="ROUND_CEILING"))


def _limit(value: int | Decimal | None, money: bool) -> int:
    if value is None:
        return -1
    return nano(value) if money else int(value)  # type: ignore[arg-type]


LIVE_SECONDS = 30.0


class RedisCounters:
    def __init__(self, client: aioredis.Redis, hold_seconds: float, live_seconds: float = LIVE_SECONDS) -> None:
        """`hold_seconds`: the longest a call may take; a hold lapses after the shorter of that and
        `live_seconds` unless kept alive."""
        self._redis = client
        self._hold_seconds = min(hold_seconds, live_seconds)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._load = self._redis.register_script(_LOAD)

    @staticmethod
    def key(namespace: str, scope: Scope) -> str:
        return f"overseer:gw:{{{namespace}}}:{scope.key}"

    def _keys(self, namespace: str, scopes: Sequence[Scope]) -> list[str]:
        keys = []
        for scope in scopes:
            keys += [self.key(namespace, scope), self.key(namespace, scope) + ":holds"]
        return keys

    async def hold(self, namespace: str, scopes: Sequence[Scope], request_id: str, tokens: int,
                   usd: Decimal) -> Refused | Unknown | None:
        """None when held in every scope; Refused when one does not fit; Unknown when one is not loaded."""
        answer = await self.lease(namespace, scopes, request_id, tokens, nano(usd), 1, 1, 0)
        return None if isinstance(answer, int) else answer

    async def lease(self, namespace: str, scopes: Sequence[Scope], request_id: str, tokens: int, nanos: int,
                    units: int, share: int, lease_seconds: float) -> int | Refused | Unknown:
        """Hold up to `units` times one call's worst case, as many as fit in a `share`-th of what is free
        (at least one: the call's own hold, which lapses as any call's); a lease of more lapses after
        `lease_seconds` unless resized. The units held (member `request_id:<tokens>:<nano-dollars>` of
        their sum), or Refused / Unknown as hold()."""
        now = time.time()
        args: list[int | float | str] = [now, now + self._hold_seconds, request_id, tokens, nanos, units, share,
                                         now + lease_seconds]
        for scope in scopes:
            args += [_limit(scope.limits.tokens, False), _limit(scope.limits.usd, True), scope.keep_seconds]
        try:
            answer = await self._reserve(keys=self._keys(namespace, scopes), args=args)
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e
        if answer[0] == -1:
            return Unknown(int(answer[1]) - 1)
        if answer[0] == 1:
            return int(answer[1])
        return Refused(int(answer[1]) - 1, answer[2] == b"u", int(answer[3]), Decimal(int(answer[4])) / NANO,
                       int(answer[5]), Decimal(int(answer[6])) / NANO)

    @property
    def live_seconds(self) -> float:
        """How long a hold lasts after it was taken or last kept alive."""
        return self._hold_seconds

    async def keep_alive(self, holds: Sequence[tuple[str, Sequence[Scope], str]]) -> None:
        """Push the lapse of these holds (namespace, scopes, member) to `live_seconds` from now, in one
        round trip; a hold that lapsed or was released meanwhile stays gone (ZADD XX), and none is
        brought closer (GT)."""
        if not holds:
            return
        lapse = time.time() + self._hold_seconds
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for namespace, scopes, member in holds:
                    for scope in scopes:
                        pipe.zadd(self.key(namespace, scope) + ":holds", {member: lapse}, xx=True, gt=True)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e

    async def load(self, namespace: str, scope: Scope, tokens: int, usd: Decimal) -> None:
        """Put a budget's spend from the ledger, unless another replica did first."""
        try:
            await self._load(keys=[self.key(namespace, scope)], args=[tokens, nano(usd), scope.keep_seconds])
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e

    async def forget(self, namespace: str, scope: Scope) -> None:
        """Drop a budget's spend (not the holds), so the next call loads it from the ledger again."""
        try:
            await self._redis.hdel(self.key(namespace, scope), "t", "u")
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e

    async def settle(self, namespace: str, scopes: Sequence[Scope], request_id: str, hold_tokens: int,
                     hold_usd: Decimal, tokens: int, usd: Decimal) -> None:
        """Release a call's hold in every scope and add what it really spent."""
        await self.resize(namespace, scopes, f"{request_id}:{hold_tokens}:{nano(hold_usd)}", hold_tokens,
                          nano(hold_usd), tokens, nano(usd))

    async def resize(self, namespace: str, scopes: Sequence[Scope], member: str, hold_tokens: int, hold_nanos: int,
                     tokens: int, nanos: int, keep: tuple[str, int, int] | None = None) -> None:
        """Release the hold `member`, add what was spent, and hold `keep` (member, tokens, nano-dollars)
        instead, in one step: a lease's calls in flight stay held while what they spent is counted."""
        args: list[int | float | str] = [member, hold_tokens, hold_nanos, tokens, nanos]
        if keep is not None:
            args += [*keep, time.time() + self._hold_seconds]
        try:
            await self._settle(keys=self._keys(namespace, scopes), args=args)
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e
