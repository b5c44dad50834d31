"""The spend ledger: one PostgreSQL row per model call, so cost outlives the Goal that caused it.

Rows are keyed by the gateway's request id and written with ON CONFLICT DO NOTHING, so writing
one twice (a retry after a lost answer) counts it once. While PostgreSQL is away rows wait in
memory, in order, and are written when it is back; totals read meanwhile lack them, which is
why the meter keeps its own running totals (budget.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_spend (
    request_id      text PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    namespace       text NOT NULL,
    agent           text NOT NULL,
    goal            text NOT NULL,
    goal_uid        text NOT NULL,
    pod             text NOT NULL,
    model           text NOT NULL,
    input_tokens    bigint NOT NULL,
    output_tokens   bigint NOT NULL,
    cache_read_tokens     bigint NOT NULL,
    cache_write_5m_tokens bigint NOT NULL,
    cache_write_1h_tokens bigint NOT NULL,
    cost_usd        numeric(20, 10) NOT NULL
);
-- the goals above the call's goal (spec.parent, parent first): a goal's spend includes its sub-goals'
ALTER TABLE gateway_spend ADD COLUMN IF NOT EXISTS ancestor_uids text[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS gateway_spend_ancestors ON gateway_spend USING gin (ancestor_uids);
CREATE INDEX IF NOT EXISTS gateway_spend_goal ON gateway_spend (goal_uid);
CREATE INDEX IF NOT EXISTS gateway_spend_agent ON gateway_spend (namespace, agent, at);
CREATE INDEX IF NOT EXISTS gateway_spend_namespace ON gateway_spend (namespace, at);
"""
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
# A batch of rows is one statement (arrays of columns, unnested), not a statement per row.
# Ancestors travel as one comma-joined text per row: unnest() would flatten an array of arrays.
_INSERT = """INSERT INTO gateway_spend (request_id, namespace, agent, goal, goal_uid, pod, model, input_tokens,
    output_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd, ancestor_uids)
    SELECT r, n, a, g, gu, p, m, i, o, cr, c5, c1, c, string_to_array(anc, ',')
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
        %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[], %s::text[])
        AS t(r, n, a, g, gu, p, m, i, o, cr, c5, c1, c, anc)
    ON CONFLICT (request_id) DO NOTHING"""
LINGER_SECONDS = 0.05  # rows arriving this close together share a statement; totals include queued rows


@dataclass(frozen=True, slots=True)
class Spend:
    """One model call, priced."""

    request_id: str
    namespace: str
    agent: str
    goal: str
    goal_uid: str
    pod: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cost_usd: Decimal
    ancestor_uids: tuple[str, ...] = ()  # of the goals above goal_uid, parent first
    ancestors: tuple[str, ...] = ()  # their names (for their status; the ledger keeps the uids)

    @property
    def tokens(self) -> int:
        return (self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_5m_tokens
                + self.cache_write_1h_tokens)

    def row(self) -> tuple[Any, ...]:
        return (self.request_id, self.namespace, self.agent, self.goal, self.goal_uid, self.pod, self.model,
                self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_5m_tokens,
                self.cache_write_1h_tokens, self.cost_usd, ",".join(self.ancestor_uids))


@dataclass(frozen=True, slots=True)
class Total:
    tokens: int
    cost_usd: Decimal
    requests: int


class LedgerUnavailable(Exception):
    """PostgreSQL cannot be reached."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why rows wait: DiskFull (PostgreSQL answered disk_full, SQLSTATE 53100) or Unavailable."""

    reason: str
    error: str
    since: float  # time.time() of the first refusal


class Ledger:
    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self._pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, open=False, timeout=5,
                                         kwargs={"autocommit": True, "connect_timeout": 3})
        self._waiting: deque[Spend] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.refused: Refusal | None = None  # while rows wait because PostgreSQL refused them

    async def open(self) -> None:
        """Start the pool and the writer; a PostgreSQL that is down now is tried again later."""
        await self._pool.open(wait=False)
        self._writer = asyncio.create_task(self._write_forever(), name="ledger-writer")

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush(timeout=5)
            self._writer.cancel()
        await self._pool.close()

    @property
    def waiting(self) -> int:
        """Rows not yet in PostgreSQL."""
        return len(self._waiting)

    def waiting_by_goal(self) -> dict[tuple[str, str, str], int]:
        """(namespace, goal, goal uid) -> rows of its calls not yet in PostgreSQL."""
        found: dict[tuple[str, str, str], int] = {}
        for s in self._waiting:
            key = (s.namespace, s.goal, s.goal_uid)
            found[key] = found.get(key, 0) + 1
        return found

    def record(self, spend: Spend) -> None:
        """Queue a row; the writer puts it in PostgreSQL as soon as it can."""
        self._waiting.append(spend)
        self._wake.set()

    async def flush(self, timeout: float = 10) -> bool:
        """Wait until every queued row is written; False if PostgreSQL did not take them in time."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._waiting and asyncio.get_running_loop().time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        return not self._waiting

    async def _write_forever(self) -> None:
        migrated, delay = False, 0.2
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_SECONDS)
            self._wake.clear()
            while self._waiting or not migrated:
                batch = list(self._waiting)[:500]
                try:
                    async with self._pool.connection() as conn:
                        if not migrated:
                            await conn.execute(SCHEMA)
                            migrated = True
                        await conn.execute(_INSERT, [list(column) for column in zip(*(s.row() for s in batch))])
                except _TRANSIENT as e:
                    reason = "DiskFull" if getattr(e, "sqlstate", None) == "53100" else "Unavailable"
                    if self.refused is None or self.refused.reason != reason:
                        first = str(e).strip().splitlines()
                        self.refused = Refusal(reason, (first[0] if first else type(e).__name__)[:300],
                                               self.refused.since if self.refused else time.time())
                    log.warning("spend ledger: PostgreSQL unavailable (%s); %d rows wait", e, len(self._waiting))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                except Exception:
                    log.exception("spend ledger: writing %d rows failed", len(batch))
                    await asyncio.sleep(delay)
                    continue
                delay = 0.2
                for _ in batch:
                    self._waiting.popleft()
                if not self._waiting:
                    self.refused = None

    async def _sum(self, where: str, args: tuple[Any, ...], queued: Callable[[Spend], bool]) -> Total:
        try:
            async with self._pool.connection(timeout=3) as conn:
                cur = await conn.execute(
                    "SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_5m_tokens"
                    " + cache_write_1h_tokens), 0), coalesce(sum(cost_usd), 0), count(*) FROM gateway_spend"
                    f" WHERE {where}", args)
                tokens, usd, count = await cur.fetchone()  # type: ignore[misc]
        except psycopg.errors.UndefinedTable:
            return Total(0, Decimal(0), 0)
        except (*_TRANSIENT, PoolTimeout) as e:
            raise LedgerUnavailable(str(e)) from e
        waiting = [s for s in self._waiting if queued(s)]
        return Total(int(tokens) + sum(s.tokens for s in waiting), Decimal(usd) + sum(
            (s.cost_usd for s in waiting), Decimal(0)), int(count) + len(waiting))

    async def goal_total(self, goal_uid: str) -> Total:
        """Everything a Goal spent, across its attempts and its sub-goals at any depth (rows still
        queued included): what its per-goal budget counts."""
        return await self._sum("(goal_uid = %s OR ancestor_uids @> ARRAY[%s::text])", (goal_uid, goal_uid),
                               lambda s: s.goal_uid == goal_uid or goal_uid in s.ancestor_uids)

    async def goal_own_total(self, goal_uid: str) -> Total:
        """What a Goal's own attempts spent, without its sub-goals."""
        return await self._sum("goal_uid = %s", (goal_uid,), lambda s: s.goal_uid == goal_uid)

    async def agent_totals(self, namespace: str, agent: str) -> tuple[Total, Total]:
        """(today in UTC, all time) of an Agent."""
        def mine(s: Spend) -> bool:
            return (s.namespace, s.agent) == (namespace, agent)

        total = await self._sum("namespace = %s AND agent = %s", (namespace, agent), mine)
        today = await self._sum("namespace = %s AND agent = %s AND at >= date_trunc('day', now() AT TIME ZONE 'UTC')"
                                " AT TIME ZONE 'UTC'", (namespace, agent), mine)
        return today, total

    async def day_total(self, namespace: str, day: str, agent: str | None = None) -> Total:
        """What a namespace (or one Agent of it) spent on a UTC day, e.g. 2026-12-02. Rows still
        queued count as that day's: they are calls of the last moments."""
        where = "namespace = %s AND at >= %s::date AT TIME ZONE 'UTC' AND at < (%s::date + 1) AT TIME ZONE 'UTC'"
        if agent is None:
            return await self._sum(where, (namespace, day, day), lambda s: s.namespace == namespace)
        return await self._sum(where + " AND agent = %s", (namespace, day, day, agent),
                               lambda s: (s.namespace, s.agent) == (namespace, agent))
