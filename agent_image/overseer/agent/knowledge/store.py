"""The knowledge base of one namespace in PostgreSQL, kept apart from the others by row-level
security (migration 3; who may read what is in docs/security.md).

One `KnowledgeBase` per agent process holds a single async connection with its namespace's own
login, and reconnects on its own. On connect it checks the schema is current (the operator
migrates with the admin login; a namespace's login may not). Writes never block the execution
loop on an outage: what cannot be written now is queued in memory and in a local spool file
(spool), and a background task replays it in order once PostgreSQL answers again. Reads during
an outage return None or an empty list at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from overseer.knowledge_schema import migrate

from overseer.kube import now_iso

from ..checkpoint import Checkpoint
from .backlog import Backlog, one_line, refusal_reason, waiting
from .checkpoints import DIVERGED, LOAD_CHECKPOINT, GoalCheckpoints, apply_checkpoint, apply_drop
from .decisions import DECISIONS, apply_decision
from .lessons import (FREQUENCY_TTL, apply_experience, apply_lesson_use, find_lessons, lexeme_frequencies,
                      search_query)
from .records import Decision, Experience, Lesson, Message, action_json, clean
from .spool import Spool, Write, enqueue, is_checkpoint_of

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Unavailable(Exception):
    """PostgreSQL cannot be reached (or stopped answering) right now."""


class _Unreachable(enum.Enum):
    """What a read returns when PostgreSQL did not answer."""

    TOKEN = 0


_UNREACHABLE = _Unreachable.TOKEN


# Errors that mean "try again later" rather than "this write is wrong".
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)


class KnowledgeBase:
    """The knowledge base of one namespace's agents, plus what other namespaces share with it.

    `dsn` is the namespace's own login (the operator provisions one per namespace): PostgreSQL
    lets it see and change only that namespace's rows, and read what is shared with it.
    `namespace` is written into every row; a login for another namespace could not store it.

    Writes are applied at once when PostgreSQL answers and queued otherwise (in memory and in
    `spool`, a local file); queued writes are replayed in order by a background task, and a
    new instance given the same spool replays what an earlier process left behind. Writes do
    not raise: a write PostgreSQL rejects as invalid is logged and dropped.

    `on_backlog` is told of the queued writes and why they wait (a `Backlog`) whenever their number or
    the reason changes, and None once they are all stored: a full disk must not show only in logs.
    """

    def __init__(self, dsn: str, *, namespace: str, spool: Path | str | None = None, connect_timeout: float = 2.0,
                 query_timeout: float = 5.0, retry_delay: float = 0.5, max_retry_delay: float = 15.0,
                 lesson_candidates: int = 50, on_backlog: Callable[[Backlog | None], None] | None = None) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.spool = Spool(spool)
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.lesson_candidates = lesson_candidates
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()            # one user of the connection at a time
        self._queue: deque[Write] = deque()
        self._counts: dict[str, int] = {}      # messages known to be in each goal's checkpoint
        self._diverged: set[str] = set()       # goals whose stored conversation is not the writer's
        self._healthy = False
        self._retry_at = 0.0                   # no new connection attempt from callers before this
        self._replayer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._wake = asyncio.Event()           # cuts a replay backoff short
        self._closed = False
        self._frequency_cache: tuple[float, dict[str, float]] = (0.0, {})
        self.on_backlog = on_backlog
        self._refusal = ("", "")               # (reason, error) of PostgreSQL's last refusal
        self._backlog: Backlog | None = None   # as last told to on_backlog
        for write in self.spool.load(namespace, _APPLY):
            self._enqueue(write)

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> bool:
        """Connect (migrating the schema) and start replaying any spooled writes. Returns
        whether PostgreSQL answered; without it the instance still queues writes."""
        self._closed = False
        try:
            async with self._lock:
                await self._connection(force=True)
        except Unavailable:
            pass
        if self._queue:
            self._kick()
        return self._healthy

    async def close(self) -> None:
        """Stop replaying and disconnect; writes still queued stay in the spool."""
        self._closed = True
        if self._replayer is not None:
            self._replayer.cancel()
            try:
                await self._replayer
            except asyncio.CancelledError:
                pass
            self._replayer = None
        async with self._lock:
            await self._disconnect()

    async def __aenter__(self) -> KnowledgeBase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def healthy(self) -> bool:
        """Whether the last exchange with PostgreSQL worked."""
        return self._healthy

    @property
    def pending_writes(self) -> int:
        """Writes queued for replay (after coalescing checkpoints)."""
        return len(self._queue)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write is in PostgreSQL; False if `timeout` passed first."""
        if not self._queue:
            return True
        self._kick(now=True)
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return not self._queue

    # -- checkpoints ---------------------------------------------------------------------------

    async def save_checkpoint(self, goal_uid: str, iteration: int, new_messages: Sequence[Message],
                              todos: Any, counters: Mapping[str, Any]) -> bool:
        """Append the messages added since the last checkpoint and store the loop's state,
        in one transaction; earlier messages are not written again.

        False when the stored conversation turned out not to be the one the writer holds (a
        write PostgreSQL rejected, a second writer, a start afresh past an unreadable
        checkpoint): nothing was appended, and the writer should `replace_messages` whole."""
        base = self._counts.get(goal_uid)
        if base is not None:
            self._counts[goal_uid] = base + len(new_messages)
        await self._write("checkpoint", {
            "goal_uid": goal_uid, "base": base, "replace": False, "messages": clean(list(new_messages)),
            "state": {"iteration": iteration, "todos": clean(todos), "counters": clean(dict(counters))},
            "namespace": self.namespace,
        })
        if goal_uid in self._diverged:
            self._diverged.discard(goal_uid)
            return False
        return True

    async def replace_messages(self, goal_uid: str, messages: Sequence[Message]) -> None:
        """Replace a goal's whole conversation (after compaction); its state is kept."""
        self._counts[goal_uid] = len(messages)
        self._diverged.discard(goal_uid)
        await self._write("checkpoint", {"goal_uid": goal_uid, "base": None, "replace": True,
                                         "messages": clean(list(messages)), "state": None,
                                         "namespace": self.namespace})

    async def drop_checkpoint(self, goal_uid: str) -> None:
        """Forget a goal's checkpoint (its run is over)."""
        self._counts[goal_uid] = 0
        await self._write("drop_checkpoint", {"goal_uid": goal_uid, "namespace": self.namespace})

    async def load_checkpoint(self, goal_uid: str, wait: float = 0.0) -> Checkpoint | None:
        """The goal's last checkpoint; None if it has none or PostgreSQL cannot be reached
        within `wait` seconds (then `healthy` is False)."""
        deadline = time.monotonic() + wait
        while True:
            row = await self._read(lambda conn: _fetchone(conn, LOAD_CHECKPOINT, {
                "namespace": self.namespace, "goal_uid": goal_uid}))
            if row is not _UNREACHABLE or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(self.retry_delay, max(0.0, deadline - time.monotonic())))
            self._kick(now=True)
        if row is _UNREACHABLE:
            return None
        if row is None:
            self._counts[goal_uid] = 0
            return None
        self._counts[goal_uid] = len(row["messages"])
        return Checkpoint(goal_uid=goal_uid, iteration=row["iteration"], messages=row["messages"],
                          todos=row["todos"], counters=row["counters"], updated_at=row["updated_at"])

    def for_goal(self, goal_uid: str, resume_wait: float = 30.0) -> GoalCheckpoints:
        """The checkpoints of one goal, in the shape the execution loop uses."""
        return GoalCheckpoints(self, goal_uid, resume_wait)

    # -- experiences and lessons ---------------------------------------------------------------

    async def record_experience(self, experience: Experience) -> None:
        """Store a finished goal; its success and error patterns are updated with it."""
        if experience.namespace != self.namespace:
            raise ValueError(f"experience of goal {experience.namespace}/{experience.goal_name}: this knowledge "
                             f"base belongs to namespace {self.namespace}")
        args = asdict(experience)
        args["actions"] = [action_json(a) for a in experience.actions]
        await self._write("experience", clean(args))

    async def lessons(self, description: str, agent: str, limit: int = 5) -> list[Lesson]:
        """The patterns most relevant to a new goal, best first: full-text rank of similar past
        goals, weighted by their recency and by how often the pattern worked (patterns of
        other agents count half). Success and failure counts are among the similar goals. They
        come from the namespace of the login, whatever `self.namespace` says: the owner's login,
        which maps to none, gets none."""
        if not description.strip() or limit <= 0:
            return []

        async def search(conn: psycopg.AsyncConnection[Any]) -> list[Lesson]:
            query = await search_query(conn, description, await self._frequencies(conn))
            if query is None:
                return []
            return await find_lessons(conn, query, agent, limit, self.lesson_candidates)

        found = await self._read(search)
        return [] if found is _UNREACHABLE else found

    async def record_lesson_use(self, lesson_ids: Iterable[int], success: bool, goal_uid: str | None = None) -> None:
        """Count that these lessons were given to a goal, and whether the goal succeeded."""
        ids = sorted({int(i) for i in lesson_ids})
        if ids:
            await self._write("lesson_use", {"ids": ids, "success": success, "goal_uid": goal_uid,
                                             "namespace": self.namespace})

    # -- approvals -----------------------------------------------------------------------------

    async def record_decision(self, goal_uid: str, approval_id: str, kind: str, summary: str, decision: str,
                              decided_by: str, decided_at: datetime | str, reason: str = "") -> None:
        """Audit an approval decision; the first decision for an approval id stands."""
        if decision not in ("approved", "denied"):
            raise ValueError(f"decision for approval {approval_id} of goal {goal_uid}: "
                             f"{decision!r} is neither 'approved' nor 'denied'")
        at = decided_at.isoformat() if isinstance(decided_at, datetime) else decided_at
        await self._write("decision", clean({
            "goal_uid": goal_uid, "approval_id": approval_id, "kind": kind, "summary": summary,
            "decision": decision, "decided_by": decided_by, "decided_at": at, "reason": reason,
            "namespace": self.namespace}))

    async def decisions(self, goal_uid: str) -> list[Decision]:
        """The decisions recorded for a goal, oldest first; empty if PostgreSQL is down."""
        rows = await self._read(lambda conn: _fetchall(conn, DECISIONS, {"namespace": self.namespace,
                                                                          "goal_uid": goal_uid}))
        if rows is _UNREACHABLE:
            return []
        return [Decision(**r) for r in rows]

    # -- writing and queueing ------------------------------------------------------------------

    async def _write(self, op: str, args: dict[str, Any]) -> None:
        write = Write(op, args)
        async with self._lock:
            # Behind queued writes a new one must wait its turn, or a goal's messages would
            # land out of order.
            if not self._queue and not self._closed:
                try:
                    await self._apply(write)
                    return
                except Unavailable:
                    pass
                except psycopg.Error:
                    logger.exception("knowledge base rejected %s write; dropped", op)
                    self._lost(write)
                    return
            self._enqueue(write)
            self.spool.append(write)
            self._tell()
        self._kick()

    def _enqueue(self, write: Write) -> None:
        enqueue(self._queue, write)
        self._drained.clear()

    def _kick(self, now: bool = False) -> None:
        """Make sure the replay task runs (at once if `now`)."""
        if now:
            self._retry_at = 0.0
            self._wake.set()
        if self._closed or not self._queue:
            return
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay(), name="knowledge-replay")

    async def _replay(self) -> None:
        delay = self.retry_delay
        while self._queue and not self._closed:
            try:
                await self._replay_once()
                delay = self.retry_delay
            except Unavailable:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, self.max_retry_delay)
        if not self._queue:
            self._drained.set()
            self._tell()

    async def _replay_once(self) -> None:
        """Apply queued writes in order until the queue is empty or PostgreSQL goes away."""
        while self._queue:
            async with self._lock:
                await self._connection(force=True)
                write = self._queue[0]
                try:
                    await self._apply(write)
                except psycopg.Error:
                    logger.exception("knowledge base rejected queued %s write; dropped", write.op)
                    self._lost(write)
                self._queue.popleft()
                self.spool.rewrite(self._queue)
                if write.op == "checkpoint":
                    logger.info("knowledge base: replayed checkpoint of goal %s", write.args["goal_uid"])

    async def _apply(self, write: Write) -> None:
        handler = _APPLY[write.op]
        result = await self._run(lambda conn: handler(conn, write))
        if write.op == "checkpoint" and result is DIVERGED:
            self._lost(write)
        elif write.op == "checkpoint" and isinstance(result, int):
            goal = write.args["goal_uid"]
            pending = sum(len(w.args["messages"]) for w in self._queue
                          if w is not write and is_checkpoint_of(w, goal) and w.op == "checkpoint")
            if self._counts.get(goal) is None:
                self._counts[goal] = result + pending

    def _lost(self, write: Write) -> None:
        """A checkpoint write did not land as its writer believes: the next save says so."""
        if write.op == "checkpoint":
            self._diverged.add(write.args["goal_uid"])
            self._counts.pop(write.args["goal_uid"], None)

    # -- the connection ------------------------------------------------------------------------

    async def _connection(self, force: bool = False) -> psycopg.AsyncConnection[Any]:
        """The open connection, or a new one (migrated); callers hold `_lock`."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if not force and time.monotonic() < self._retry_at:
            raise Unavailable("PostgreSQL was unreachable moments ago")
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                connect_timeout=max(2, math.ceil(self.connect_timeout))),
                self.connect_timeout)
        except _TRANSIENT as exc:
            self._mark_down(exc)
            raise Unavailable(str(exc)) from exc
        try:
            await migrate(conn)
        except psycopg.Error as exc:
            # Not only an outage: a schema that cannot be migrated (privileges, a bad
            # migration) must keep writes queued, not have them rejected one by one.
            await conn.close()
            if not isinstance(exc, _TRANSIENT):
                logger.error("knowledge base: migrating the schema failed: %s", exc)
            self._mark_down(exc)
            raise Unavailable(str(exc)) from exc
        if not self._healthy:
            logger.info("knowledge base: connected")
        self._conn = conn
        self._healthy = True
        return conn

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run `fn` on the connection within the query timeout; callers hold `_lock`."""
        for fresh in (False, True):
            reused = self._conn is not None and not self._conn.closed
            conn = await self._connection(force=fresh)
            try:
                return await asyncio.wait_for(fn(conn), self.query_timeout)
            except _TRANSIENT as exc:
                await self._disconnect()
                # A connection the server dropped while it sat idle (a restart) gets one
                # fresh try; a timeout does not, or the caller would wait twice as long.
                if not fresh and reused and not isinstance(exc, TimeoutError):
                    continue
                self._mark_down(exc)
                raise Unavailable(str(exc)) from exc
        raise AssertionError("not reached")

    async def _read(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T | _Unreachable:
        """A read that answers `_UNREACHABLE` at once when PostgreSQL is away. Queued writes
        go first, so a read sees what this process wrote."""
        if self._queue:
            if not self._healthy or not await self.flush(self.query_timeout):
                return _UNREACHABLE
        async with self._lock:
            try:
                return await self._run(fn)
            except Unavailable:
                return _UNREACHABLE

    def _mark_down(self, exc: BaseException) -> None:
        if self._healthy:
            logger.warning("knowledge base unreachable, queueing writes: %s", str(exc).strip() or type(exc).__name__)
        self._healthy = False
        self._retry_at = time.monotonic() + self.retry_delay
        self._refusal = (refusal_reason(exc), one_line(exc))
        if self._queue:
            self._tell()

    def _tell(self) -> None:
        """Tell on_backlog what waits now, if that changed (how many writes, or why)."""
        if not self._queue:
            backlog = None
        else:
            reason, error = self._refusal
            since = self._backlog.since if self._backlog is not None else now_iso()
            backlog = Backlog(reason or "Unavailable", error or "not reached yet", len(self._queue),
                              waiting(self._queue), since)
            if self._backlog is not None and (self._backlog.reason, self._backlog.queued, self._backlog.waiting) == (
                    backlog.reason, backlog.queued, backlog.waiting):
                return
        if backlog is None and self._backlog is None:
            return
        self._backlog = backlog
        if self.on_backlog is not None:
            try:
                self.on_backlog(backlog)
            except Exception:  # a report that failed must not stop the writes
                logger.exception("knowledge base: reporting queued writes failed")

    @property
    def backlog(self) -> Backlog | None:
        """The writes waiting for PostgreSQL and why, or None."""
        return self._backlog

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass

    async def _frequencies(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, float]:
        """Share of the namespace's recent experiences holding each common lexeme (refreshed every few
        minutes)."""
        fetched, frequencies = self._frequency_cache
        if time.monotonic() - fetched > FREQUENCY_TTL:
            frequencies = await lexeme_frequencies(conn, self.namespace)
            self._frequency_cache = (time.monotonic(), frequencies)
        return frequencies


_APPLY: dict[str, Callable[[psycopg.AsyncConnection[Any], Write], Awaitable[Any]]] = {
    "checkpoint": apply_checkpoint,
    "drop_checkpoint": apply_drop,
    "experience": apply_experience,
    "lesson_use": apply_lesson_use,
    "decision": apply_decision,
}


async def _fetchone(conn: psycopg.AsyncConnection[Any], sql: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchone()


async def _fetchall(conn: psycopg.AsyncConnection[Any], sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()
