"""Budget counters shared by every gateway replica, in Redis.

Per Goal: what it spent (tokens, nano-dollars) and the holds of its calls in flight, each hold a
member of a sorted set scored by when it lapses, so a replica that dies mid-call cannot hold
budget forever, and their running sums, so checking a call costs the same however many are in
flight. Checking the budget and adding a hold is one Lua script: two replicas never both take the
last of a budget. A Goal whose spend is not in Redis yet is loaded from the ledger
first (the script answers "unknown" and the caller loads it with SET NX).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

NANO = Decimal(1_000_000_000)
KEEP_SECONDS = 7 * 24 * 3600  # spend of a goal idle this long is read from the ledger again

_RESERVE = """
local now = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
-- Holds of calls that never settled (their replica died) lapse: take them off the running sums.
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #lapsed > 0 then
  local gone_t, gone_u = 0, 0
  for _, m in ipairs(lapsed) do
    local t, u = string.match(m, ':(%d+):(%d+)$')
    gone_t, gone_u = gone_t + tonumber(t), gone_u + tonumber(u)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[3], 't', string.format('%d', -gone_t))  -- %d: never '-0' or '1e+15'
  redis.call('HINCRBY', KEYS[3], 'u', string.format('%d', -gone_u))
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
local spent = redis.call('HMGET', KEYS[1], 't', 'u')
local held = redis.call('HMGET', KEYS[3], 't', 'u')
local spent_t, spent_u = tonumber(spent[1] or '0'), tonumber(spent[2] or '0')
local held_t, held_u = tonumber(held[1] or '0'), tonumber(held[2] or '0')
local limit_t, limit_u = tonumber(ARGV[1]), tonumber(ARGV[2])
local want_t, want_u = tonumber(ARGV[3]), tonumber(ARGV[4])
if limit_u >= 0 and spent_u + held_u + want_u > limit_u then
  return {0, 'maxCostPerGoal', spent_t, tostring(spent_u), held_t, tostring(held_u)}
end
if limit_t >= 0 and spent_t + held_t + want_t > limit_t then
  return {0, 'maxTokensPerGoal', spent_t, tostring(spent_u), held_t, tostring(held_u)}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[7] .. ':' .. want_t .. ':' .. want_u)
redis.call('HINCRBY', KEYS[3], 't', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'u', ARGV[4])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[8])) end
return {1}
"""
_SETTLE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then  -- a hold that lapsed was taken off already
  redis.call('HINCRBY', KEYS[3], 't', ARGV[4])  -- ARGV[4], ARGV[5]: the hold, negated
  redis.call('HINCRBY', KEYS[3], 'u', ARGV[5])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'u', ARGV[3])
end
return 1
"""
_LOAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 't', ARGV[1], 'u', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Refused:
    """The budget a hold did not fit, and the Goal's state when it did not."""

    budget: str
    spent_tokens: int
    spent_usd: Decimal
    held_tokens: int
    held_usd: Decimal


class CountersUnavailable(Exception):
    """Redis cannot be reached."""


def _nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(rounding="ROUND_CEILING"))


class RedisCounters:
    def __init__(self, url: str, hold_seconds: float) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._hold_seconds = hold_seconds
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._load = self._redis.register_script(_LOAD)

    async def close(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _keys(goal_uid: str) -> list[str]:
        # One hash tag per Goal: its keys land on one Redis Cluster slot, as a script needs. (A replica
        # of a version before the running sums keeps its holds in `held`, never mixed into these.)
        return [f"overseer:gw:spent:{{{goal_uid}}}", f"overseer:gw:holds:{{{goal_uid}}}",
                f"overseer:gw:holdsum:{{{goal_uid}}}"]

    async def hold(self, goal_uid: str, request_id: str, tokens: int, usd: Decimal, limit_tokens: int | None,
                   limit_usd: Decimal | None) -> Refused | None | bool:
        """None when held; Refused when it does not fit; False when the Goal's spend is not loaded."""
        args: list[int | float | str] = [-1 if limit_tokens is None else limit_tokens, -1 if limit_usd is None else _nano(limit_usd),
                tokens, _nano(usd), time.time(), self._hold_seconds, request_id, KEEP_SECONDS]
        try:
            answer = await self._reserve(keys=self._keys(goal_uid), args=args)
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e
        if answer[0] == -1:
            return False
        if answer[0] == 1:
            return None
        return Refused(answer[1].decode(), int(answer[2]), Decimal(int(answer[3])) / NANO, int(answer[4]),
                       Decimal(int(answer[5])) / NANO)

    async def load(self, goal_uid: str, tokens: int, usd: Decimal) -> None:
        """Put a Goal's spend from the ledger, unless another replica did first."""
        try:
            await self._load(keys=self._keys(goal_uid), args=[tokens, _nano(usd), KEEP_SECONDS])
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e

    async def forget(self, goal_uid: str) -> None:
        """Drop a Goal's spend, so the next call loads it from the ledger again."""
        try:
            await self._redis.delete(self._keys(goal_uid)[0])
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e

    async def settle(self, goal_uid: str, request_id: str, hold_tokens: int, hold_usd: Decimal, tokens: int,
                     usd: Decimal) -> None:
        held_nano = _nano(hold_usd)
        member = f"{request_id}:{hold_tokens}:{held_nano}"
        try:
            await self._settle(keys=self._keys(goal_uid), args=[member, tokens, _nano(usd), -hold_tokens, -held_nano])
        except (RedisError, OSError) as e:
            raise CountersUnavailable(str(e)) from e
