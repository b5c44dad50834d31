"""The knowledge base in PostgreSQL: checkpoints, experiences, patterns, lessons and the
approvals audit, kept apart per namespace by row-level security (migration 3; who may read what
is in docs/security.md).

One `KnowledgeBase` per agent process holds a single async connection with its namespace's own
login, and reconnects on its own. On connect it applies the schema migrations the database lacks
(a namespace's login may not: the operator migrates with the admin login; the login only checks
the schema is current). Writes never block the execution loop on
an outage: what cannot be written now is queued in memory and in a local spool file, and a
background task replays it in order once PostgreSQL answers again. Reads during an outage
return None or an empty list at once.

Patterns are extracted inside PostgreSQL by a statement trigger on `experiences`, so one
recorded goal and a million seeded ones go through the same code. Lessons for a new goal are
found through the recent experiences most like it (full-text search) and the patterns those
followed, ranked by text rank, recency and how often the pattern worked.

`GoalCheckpoints` gives the execution loop one goal's checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from overseer.knowledge_schema import migrate

from .checkpoint import Checkpoint

logger = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, Any]
"""An Anthropic Messages API message: {"role": ..., "content": [...]}."""

QUERY_TERMS = 6          # terms of a new goal's description used to find similar experiences
COMMON_LEXEME = 0.5      # share of experiences above which a term says little about a goal
FREQUENCY_TTL = 300.0    # seconds the lexeme frequencies are cached
FREQUENCY_SAMPLE = 2000  # recent experiences the lexeme frequencies are counted in
FREQUENT = 0.01          # share of them below which a lexeme counts as rare (frequency 0)
FREQUENCY_LEAST = 200    # fewer experiences say little about frequencies (and every search is cheap)

# ---- what is stored ------------------------------------------------------------------------


@dataclass
class Action:
    """One step of a goal: the tool used and a short note on how it went."""

    tool: str
    outcome: str = ""


@dataclass
class Experience:
    """A finished goal, as the knowledge base learns from it."""

    goal_uid: str
    goal_name: str
    namespace: str
    agent: str
    description: str
    success: bool
    outcome: str = ""
    context_summary: str = ""
    actions: list[Action] = field(default_factory=list)
    tokens: int = 0
    duration_seconds: float = 0.0
    error: str | None = None


@dataclass
class Lesson:
    """A pattern worth telling the next goal, as prompt-ready text; `id` goes back to
    `record_lesson_use`."""

    id: int
    kind: str
    text: str
    score: float
    success_count: int
    failure_count: int
    usage_count: int


@dataclass
class Decision:
    """A person's (or a policy's) answer to an approval request."""

    goal_uid: str
    approval_id: str
    kind: str
    summary: str
    decision: str
    decided_by: str
    decided_at: datetime
    reason: str = ""


# ---- the knowledge base --------------------------------------------------------------------


class Unavailable(Exception):
    """PostgreSQL cannot be reached (or stopped answering) right now."""


_UNREACHABLE = object()  # what a read returns when PostgreSQL did not answer


# Errors that mean "try again later" rather than "this write is wrong".
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)


@dataclass
class _Write:
    """One queued write; `id` makes its replay idempotent."""

    op: str
    args: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "op": self.op, "args": self.args}, default=str)


class KnowledgeBase:
    """The knowledge base of one namespace's agents, plus what other namespaces share with it.

    `dsn` is the namespace's own login (the operator provisions one per namespace): PostgreSQL
    lets it see and change only that namespace's rows, and read what is shared with it.
    `namespace` is written into every row; a login for another namespace could not store it.

    Writes are applied at once when PostgreSQL answers and queued otherwise (in memory and in
    `spool`, a local file); queued writes are replayed in order by a background task, and a
    new instance given the same spool replays what an earlier process left behind. Writes do
    not raise: a write PostgreSQL rejects as invalid is logged and dropped.
    """

    def __init__(self, dsn: str, *, namespace: str, spool: Path | str | None = None, connect_timeout: float = 2.0,
                 query_timeout: float = 5.0, retry_delay: float = 0.5, max_retry_delay: float = 15.0,
                 lesson_candidates: int = 50) -> None:
        self.dsn = dsn
        self.namespace = namespace
        self.spool = Path(spool) if spool is not None else None
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.lesson_candidates = lesson_candidates
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()            # one user of the connection at a time
        self._queue: deque[_Write] = deque()
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
        self._load_spool()

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
            "goal_uid": goal_uid, "base": base, "replace": False, "messages": _clean(list(new_messages)),
            "state": {"iteration": iteration, "todos": _clean(todos), "counters": _clean(dict(counters))},
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
                                         "messages": _clean(list(messages)), "state": None,
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
            row = await self._read(lambda conn: _fetchone(conn, _LOAD_CHECKPOINT, {
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
        args["actions"] = [_action(a) for a in experience.actions]
        await self._write("experience", _clean(args))

    async def lessons(self, description: str, agent: str, limit: int = 5) -> list[Lesson]:
        """The patterns most relevant to a new goal, best first: full-text rank of similar past
        goals, weighted by their recency and by how often the pattern worked (patterns of
        other agents count half). Success and failure counts are among the similar goals."""
        if not description.strip() or limit <= 0:
            return []

        async def search(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute(_QUERY_LEXEMES, (_clean(description[:4000]),))
            lexemes = [row[0] for row in await cur.fetchall()]
            query = _match_query(lexemes, await self._frequencies(conn))
            if query is None:
                return []
            params = {"query": query, "namespace": self.namespace, "agent": agent, "limit": limit,
                      "candidates": self.lesson_candidates}
            async with conn.cursor(row_factory=dict_row) as cur:
                # Never a generic plan: which index pays off depends on how common the terms are.
                await cur.execute(_LESSONS, params, prepare=False)
                return await cur.fetchall()

        rows = await self._read(search)
        if rows is _UNREACHABLE:
            return []
        return [Lesson(id=r["id"], kind=r["kind"], text=_lesson_text(r), score=float(r["score"]),
                       success_count=r["success_count"], failure_count=r["failure_count"],
                       usage_count=r["usage_count"]) for r in rows]

    async def record_lesson_use(self, lesson_ids: Iterable[int], success: bool, goal_uid: str | None = None) -> None:
        """Count that these lessons were given to a goal, and whether the goal succeeded."""
        ids = sorted({int(i) for i in lesson_ids})
        if ids:
            await self._write("lesson_use", {"ids": ids, "success": success, "goal_uid": goal_uid,
                                             "namespace": self.namespace})

    async def seed_experiences(self, n: int, agent: str = "bench", batch: int = 50_000,
                               step_seconds: float = 30.0) -> int:
        """Insert `n` synthetic experiences (with their patterns) for benchmarks: one every
        `step_seconds`, the newest now, in time order as real ones arrive."""
        done = 0
        end = datetime.now(timezone.utc)
        while done < n:
            size = min(batch, n - done)
            until = end - timedelta(seconds=step_seconds * (n - done - size))
            async with self._lock:
                conn = await self._connection(force=True)
                cur = await conn.execute("SELECT overseer_seed_experiences(%s, %s, %s, %s, %s)",
                                         (size, agent, until, timedelta(seconds=step_seconds), self.namespace))
                done += (await cur.fetchone())[0]
        async with self._lock:
            conn = await self._connection(force=True)
            await conn.execute("ANALYZE experiences")
            await conn.execute("ANALYZE patterns")
        return done

    # -- approvals -----------------------------------------------------------------------------

    async def record_decision(self, goal_uid: str, approval_id: str, kind: str, summary: str, decision: str,
                              decided_by: str, decided_at: datetime | str, reason: str = "") -> None:
        """Audit an approval decision; the first decision for an approval id stands."""
        if decision not in ("approved", "denied"):
            raise ValueError(f"decision for approval {approval_id} of goal {goal_uid}: "
                             f"{decision!r} is neither 'approved' nor 'denied'")
        at = decided_at.isoformat() if isinstance(decided_at, datetime) else decided_at
        await self._write("decision", _clean({
            "goal_uid": goal_uid, "approval_id": approval_id, "kind": kind, "summary": summary,
            "decision": decision, "decided_by": decided_by, "decided_at": at, "reason": reason,
            "namespace": self.namespace}))

    async def decisions(self, goal_uid: str) -> list[Decision]:
        """The decisions recorded for a goal, oldest first; empty if PostgreSQL is down."""
        rows = await self._read(lambda conn: _fetchall(conn, _DECISIONS, {"namespace": self.namespace,
                                                                          "goal_uid": goal_uid}))
        if rows is _UNREACHABLE:
            return []
        return [Decision(**r) for r in rows]

    # -- writing and queueing ------------------------------------------------------------------

    async def _write(self, op: str, args: dict[str, Any]) -> None:
        write = _Write(op, args)
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
            self._spool_append(write)
        self._kick()

    def _enqueue(self, write: _Write) -> None:
        """Queue a write; a checkpoint merges into the goal's checkpoint already waiting."""
        if write.op in ("checkpoint", "drop_checkpoint"):
            goal = write.args["goal_uid"]
            if write.op == "drop_checkpoint":
                self._queue = deque(w for w in self._queue if not _is_checkpoint_of(w, goal))
            else:
                last = next((w for w in reversed(self._queue) if _is_checkpoint_of(w, goal)), None)
                if last is not None and last.op == "checkpoint":
                    new, old = write.args, last.args
                    if new["replace"]:
                        old.update(replace=True, base=None, messages=new["messages"])
                    else:
                        old["messages"] = old["messages"] + new["messages"]
                    if new["state"] is not None:
                        old["state"] = new["state"]
                    last.id = write.id
                    return
        self._queue.append(write)
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
                self._spool_rewrite()
                if write.op == "checkpoint":
                    logger.info("knowledge base: replayed checkpoint of goal %s", write.args["goal_uid"])

    async def _apply(self, write: _Write) -> None:
        handler = _APPLY[write.op]
        result = await self._run(lambda conn: handler(conn, write))
        if write.op == "checkpoint" and result is _DIVERGED:
            self._lost(write)
        elif write.op == "checkpoint" and isinstance(result, int):
            goal = write.args["goal_uid"]
            pending = sum(len(w.args["messages"]) for w in self._queue
                          if w is not write and _is_checkpoint_of(w, goal) and w.op == "checkpoint")
            if self._counts.get(goal) is None:
                self._counts[goal] = result + pending

    def _lost(self, write: _Write) -> None:
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

    async def _read(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T | object:
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
            cur = await conn.execute(_LEXEME_FREQUENCIES, {"namespace": self.namespace,
                                                           "sample": FREQUENCY_SAMPLE, "common": FREQUENT,
                                                           "least": FREQUENCY_LEAST})
            frequencies = {lexeme: float(f) for lexeme, f in await cur.fetchall()}
            self._frequency_cache = (time.monotonic(), frequencies)
        return frequencies

    # -- the spool -----------------------------------------------------------------------------

    def _load_spool(self) -> None:
        if self.spool is None or not self.spool.exists():
            return
        loaded = 0
        for line in self.spool.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                write = _Write(data["op"], data["args"], data["id"])
                if write.op not in _APPLY or not isinstance(write.args, dict):
                    raise ValueError(write.op)
                write.args.setdefault("namespace", self.namespace)  # spooled before namespaces
            except (ValueError, KeyError, TypeError):
                logger.warning("knowledge base spool %s: skipped an unreadable line", self.spool)
                continue
            self._enqueue(write)
            loaded += 1
        if loaded:
            logger.info("knowledge base: %d writes from spool %s to replay", loaded, self.spool)

    # Local file writes are small appends (only during outages): cheap enough for the loop.
    def _spool_append(self, write: _Write) -> None:
        if self.spool is None:
            return
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a", encoding="utf-8") as f:
            f.write(write.to_json() + "\n")

    def _spool_rewrite(self) -> None:
        """Leave only the writes still queued in the spool (atomically)."""
        if self.spool is None:
            return
        if not self._queue:
            self.spool.unlink(missing_ok=True)
            return
        tmp = self.spool.with_name(self.spool.name + ".tmp")
        tmp.write_text("".join(w.to_json() + "\n" for w in self._queue), encoding="utf-8")
        os.replace(tmp, self.spool)


class GoalCheckpoints:
    """One goal's checkpoints with the `load` / `save` / `replace` methods the execution loop
    calls. `load` waits up to `resume_wait` seconds for PostgreSQL, because starting a run
    afresh on top of a checkpoint that could not be read would mix two histories."""

    def __init__(self, kb: KnowledgeBase, goal_uid: str, resume_wait: float = 30.0) -> None:
        self.kb = kb
        self.goal_uid = goal_uid
        self.resume_wait = resume_wait

    async def load(self) -> Checkpoint | None:
        return await self.kb.load_checkpoint(self.goal_uid, wait=self.resume_wait)

    async def save(self, iteration: int, new_messages: list[Message], todos: Any, counters: dict[str, Any]) -> bool:
        return await self.kb.save_checkpoint(self.goal_uid, iteration, new_messages, todos, counters)

    async def replace(self, messages: list[Message]) -> None:
        await self.kb.replace_messages(self.goal_uid, messages)

    async def drop(self) -> None:
        await self.kb.drop_checkpoint(self.goal_uid)


# ---- SQL per operation -----------------------------------------------------------------------

_LOAD_CHECKPOINT = """
SELECT c.iteration, c.todos, c.counters, c.updated_at,
       coalesce((SELECT jsonb_agg(m.message ORDER BY m.seq) FROM checkpoint_messages m
                 WHERE m.namespace = c.namespace AND m.goal_uid = c.goal_uid AND m.seq < c.message_count),
                '[]') AS messages
FROM checkpoints c WHERE c.namespace = %(namespace)s AND c.goal_uid = %(goal_uid)s
"""

_DECISIONS = """
SELECT goal_uid, approval_id, kind, summary, decision, decided_by, decided_at, reason
FROM decisions WHERE namespace = %(namespace)s AND goal_uid = %(goal_uid)s ORDER BY decided_at, id
"""

_QUERY_LEXEMES = """
SELECT u.lexeme FROM unnest(to_tsvector('english', %s)) AS u ORDER BY u.positions[1] LIMIT 24
"""

# How often each common lexeme occurs in the namespace's recent experiences. Not from pg_stats:
# those cover every tenant's rows, and PostgreSQL hides them from a login under row-level
# security for that reason.
_LEXEME_FREQUENCIES = """
SELECT f.word, f.ndoc::float8 / t.total AS frequency
FROM (SELECT greatest(count(*), 1) AS total
      FROM (SELECT 1 FROM experiences WHERE namespace = %(namespace)s
            ORDER BY created_at DESC LIMIT %(sample)s) recent) t,
     ts_stat(format('SELECT search FROM experiences WHERE namespace = %%L ORDER BY created_at DESC LIMIT %%s',
                    %(namespace)s::text, %(sample)s::integer)) f
WHERE t.total >= %(least)s AND f.ndoc >= %(common)s * t.total
"""

# Lessons come from the most recent experiences that share terms with the new goal, grouped
# by the pattern each followed (its tool sequence, its error), plus patterns whose own text
# matches. The work is bounded by `candidates`, whatever the size of the table; the text rank
# is only computed for those. The query is planned with its terms (never a generic plan): at
# a million experiences, common terms walk experiences_namespace_created backwards with the tsquery as
# a filter and stop after `candidates` matches (a few thousand rows read); rare terms take a
# bitmap scan of experiences_search. Either way a few milliseconds.
# Row-level security decides what is readable; the search still names its own namespace (with
# its statistics, the planner walks experiences_namespace_created for a small namespace beside a
# big one instead of reading through the big one's rows), and then each namespace sharing with it.
_LESSONS = """
WITH hits AS (
    (SELECT e.namespace, e.agent, e.approach, e.error_key, e.success, e.description, e.outcome, e.actions,
            e.error, e.search, e.created_at
     FROM experiences e
     WHERE e.namespace = %(namespace)s AND e.search @@ %(query)s::tsquery
     ORDER BY e.created_at DESC
     LIMIT %(candidates)s)
    UNION ALL
    (SELECT h.* FROM (SELECT DISTINCT s.namespace FROM knowledge_shares s
                      WHERE s.reader IN (%(namespace)s, '*') AND s.namespace <> %(namespace)s) sharing
     CROSS JOIN LATERAL (
         SELECT e.namespace, e.agent, e.approach, e.error_key, e.success, e.description, e.outcome, e.actions,
                e.error, e.search, e.created_at
         FROM experiences e
         WHERE e.namespace = sharing.namespace AND e.search @@ %(query)s::tsquery
         ORDER BY e.created_at DESC
         LIMIT %(candidates)s) h)
    ORDER BY created_at DESC
    LIMIT %(candidates)s
), ranked AS (
    SELECT h.*, ts_rank(h.search, %(query)s::tsquery)
                / (1.0 + extract(epoch FROM now() - h.created_at) / 2592000.0) AS relevance
    FROM hits h
), found AS (
    SELECT 0 AS source, 'success' AS kind, namespace, agent, approach AS key, sum(relevance) AS relevance,
           count(*) FILTER (WHERE success) AS succeeded, count(*) AS seen,
           (array_agg(description ORDER BY success DESC, relevance DESC))[1] AS task,
           overseer_steps((array_agg(actions ORDER BY success DESC, relevance DESC))[1]) AS detail,
           (array_agg(outcome ORDER BY relevance DESC) FILTER (WHERE success))[1] AS outcome
    FROM ranked WHERE approach IS NOT NULL GROUP BY namespace, agent, approach
    UNION ALL
    SELECT 0, 'error', namespace, agent, error_key, sum(relevance), count(*) FILTER (WHERE success), count(*),
           (array_agg(description ORDER BY relevance DESC))[1],
           (array_agg(left(error, 300) ORDER BY relevance DESC))[1],
           (array_agg(outcome ORDER BY relevance DESC) FILTER (WHERE success))[1]
    FROM ranked WHERE error_key IS NOT NULL GROUP BY namespace, agent, error_key
    UNION ALL
    SELECT 1, kind, namespace, agent, key, relevance, success_count, success_count + failure_count, task, detail, outcome
    FROM (SELECT p.*, ts_rank(p.search, %(query)s::tsquery)
                      / (1.0 + extract(epoch FROM now() - p.last_seen) / 2592000.0) AS relevance
          FROM patterns p WHERE p.search @@ %(query)s::tsquery
          ORDER BY p.last_seen DESC LIMIT 20) own_text
), merged AS (
    -- a pattern found both ways keeps the counts among the similar goals
    SELECT kind, namespace, agent, key, sum(relevance) AS relevance,
           (array_agg(succeeded ORDER BY source))[1] AS succeeded, (array_agg(seen ORDER BY source))[1] AS seen,
           (array_agg(task ORDER BY source))[1] AS task, (array_agg(detail ORDER BY source))[1] AS detail,
           (array_agg(outcome ORDER BY source))[1] AS outcome
    FROM found GROUP BY kind, namespace, agent, key
)
SELECT p.id, m.kind, m.task, m.detail, m.outcome, m.succeeded AS success_count,
       m.seen - m.succeeded AS failure_count, p.usage_count,
       m.relevance
       * CASE WHEN m.kind = 'success'
              THEN (m.succeeded + p.usage_success_count + 1.0) / (m.seen + p.usage_count + 2.0)
              ELSE 0.5 + 0.5 * m.succeeded / greatest(m.seen, 1.0) END
       * CASE WHEN m.namespace = %(namespace)s AND m.agent = %(agent)s THEN 1.0 ELSE 0.5 END AS score
FROM merged m JOIN patterns p ON p.namespace = m.namespace AND p.kind = m.kind AND p.agent = m.agent
                             AND p.key = m.key
ORDER BY score DESC, p.id
LIMIT %(limit)s
"""

_INSERT_EXPERIENCE = """
INSERT INTO experiences (id, goal_uid, goal_name, namespace, agent, description, context_summary, actions,
                         outcome, success, tokens, duration_seconds, error)
VALUES (%(id)s, %(goal_uid)s, %(goal_name)s, %(namespace)s, %(agent)s, %(description)s, %(context_summary)s,
        %(actions)s, %(outcome)s, %(success)s, %(tokens)s, %(duration_seconds)s, %(error)s)
ON CONFLICT (id) DO NOTHING
"""

_LESSON_USE = """
WITH used AS (
    INSERT INTO lesson_usage (namespace, write_id, pattern_id, goal_uid, success)
    SELECT %(namespace)s, %(write_id)s, p.id, %(goal_uid)s, %(success)s FROM patterns p WHERE p.id = ANY(%(ids)s)
    ON CONFLICT DO NOTHING
    RETURNING pattern_id
)
-- only the namespace's own patterns count it: a reader of shared ones cannot move the owner's ranking
UPDATE patterns p SET usage_count = p.usage_count + 1,
                      usage_success_count = p.usage_success_count + %(success)s::int
FROM used WHERE p.id = used.pattern_id AND p.namespace = %(namespace)s
"""

_INSERT_DECISION = """
INSERT INTO decisions (namespace, goal_uid, approval_id, kind, summary, decision, decided_by, decided_at, reason)
VALUES (%(namespace)s, %(goal_uid)s, %(approval_id)s, %(kind)s, %(summary)s, %(decision)s, %(decided_by)s,
        %(decided_at)s, %(reason)s)
ON CONFLICT (namespace, goal_uid, approval_id) DO NOTHING
"""


# A checkpoint in the usual case, as one statement (one round trip, one transaction): the row
# holds the `base` messages the writer counted, so the new ones go after them. No row updated
# means another case (a first save, a replay, a mismatch), which _apply_checkpoint handles.
_APPEND_CHECKPOINT = """
WITH updated AS (
    UPDATE checkpoints SET iteration = %(iteration)s, message_count = %(count)s, todos = %(todos)s,
                           counters = %(counters)s, last_write = %(write_id)s, updated_at = now()
    WHERE namespace = %(namespace)s AND goal_uid = %(goal_uid)s AND message_count = %(base)s
    RETURNING namespace, goal_uid
), appended AS (
    INSERT INTO checkpoint_messages (namespace, goal_uid, seq, message)
    SELECT u.namespace, u.goal_uid, %(base)s + t.n - 1, t.m
    FROM updated u, jsonb_array_elements(%(messages)s) WITH ORDINALITY AS t (m, n)
)
SELECT count(*) FROM updated
"""


_DIVERGED = object()  # _apply_checkpoint: the stored conversation is not the writer's


async def _apply_checkpoint(conn: psycopg.AsyncConnection[Any], write: _Write) -> int | object:
    """Append (or replace) a goal's messages and store its state; returns the message count,
    or _DIVERGED (writing nothing) when the stored messages do not match the writer's.

    `base` is how many messages the writer believed were stored before these (None: it never
    read the checkpoint, so it believes there were none): a replay of a write that did commit,
    its answer lost with the connection, adds nothing twice."""
    a = write.args
    ns, goal, messages = a["namespace"], a["goal_uid"], a["messages"]
    state = a["state"]
    if not a["replace"] and a["base"] is not None and state is not None:
        count = a["base"] + len(messages)
        cur = await conn.execute(_APPEND_CHECKPOINT, {
            "namespace": ns, "goal_uid": goal, "base": a["base"], "count": count, "iteration": state["iteration"],
            "todos": Jsonb(state["todos"]), "counters": Jsonb(state["counters"]), "write_id": write.id,
            "messages": Jsonb(messages)})
        if (await cur.fetchone())[0]:
            return count
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT message_count, last_write FROM checkpoints WHERE namespace = %s AND goal_uid = %s FOR UPDATE",
            (ns, goal))
        row = await cur.fetchone()
        stored, last_write = (row[0], row[1]) if row else (0, None)
        if a["replace"]:
            await conn.execute("DELETE FROM checkpoint_messages WHERE namespace = %s AND goal_uid = %s", (ns, goal))
            start, new = 0, messages
        elif last_write == write.id:
            start, new = stored, []
        else:
            # stored - base messages of this write already landed (part of a merged write
            # committed before its answer was lost); a writer that never read the checkpoint
            # expects none
            skip = stored - a["base"] if a["base"] is not None else (0 if stored == 0 else -1)
            if not 0 <= skip <= len(messages):
                # Appending would leave a gap or mix two conversations.
                logger.warning("checkpoint of goal %s holds %d messages, its writer expected %s; "
                               "asking for the whole conversation", goal, stored, a["base"] or 0)
                return _DIVERGED
            start, new = stored, messages[skip:]
        count = start + len(new)
        if state is None:
            await conn.execute(
                "INSERT INTO checkpoints (namespace, goal_uid, message_count, last_write) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (namespace, goal_uid) DO UPDATE SET message_count = EXCLUDED.message_count, "
                "last_write = EXCLUDED.last_write, updated_at = now()", (ns, goal, count, write.id))
        else:
            await conn.execute(
                "INSERT INTO checkpoints (namespace, goal_uid, iteration, message_count, todos, counters, last_write) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (namespace, goal_uid) DO UPDATE SET iteration = EXCLUDED.iteration, "
                "message_count = EXCLUDED.message_count, todos = EXCLUDED.todos, counters = EXCLUDED.counters, "
                "last_write = EXCLUDED.last_write, updated_at = now()",
                (ns, goal, state["iteration"], count, Jsonb(state["todos"]), Jsonb(state["counters"]), write.id))
        if new:
            await conn.execute(
                "INSERT INTO checkpoint_messages (namespace, goal_uid, seq, message) "
                "SELECT %s, %s, %s + n - 1, m FROM jsonb_array_elements(%s) WITH ORDINALITY AS t (m, n)",
                (ns, goal, start, Jsonb(new)))
    return count


async def _apply_drop(conn: psycopg.AsyncConnection[Any], write: _Write) -> None:
    await conn.execute("DELETE FROM checkpoints WHERE namespace = %s AND goal_uid = %s",
                       (write.args["namespace"], write.args["goal_uid"]))


async def _apply_experience(conn: psycopg.AsyncConnection[Any], write: _Write) -> None:
    params = dict(write.args, id=uuid.UUID(hex=write.id), actions=Jsonb(write.args["actions"]))
    await conn.execute(_INSERT_EXPERIENCE, params)


async def _apply_lesson_use(conn: psycopg.AsyncConnection[Any], write: _Write) -> None:
    await conn.execute(_LESSON_USE, dict(write.args, write_id=write.id))


async def _apply_decision(conn: psycopg.AsyncConnection[Any], write: _Write) -> None:
    await conn.execute(_INSERT_DECISION, write.args)


_APPLY: dict[str, Callable[[psycopg.AsyncConnection[Any], _Write], Awaitable[Any]]] = {
    "checkpoint": _apply_checkpoint,
    "drop_checkpoint": _apply_drop,
    "experience": _apply_experience,
    "lesson_use": _apply_lesson_use,
    "decision": _apply_decision,
}


async def _fetchone(conn: psycopg.AsyncConnection[Any], sql: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchone()


async def _fetchall(conn: psycopg.AsyncConnection[Any], sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


# ---- helpers ---------------------------------------------------------------------------------


def _match_query(lexemes: Sequence[str], frequencies: Mapping[str, float]) -> str | None:
    """A tsquery for experiences like a new goal: the goal's most telling terms (the rarest
    among its first lexemes; very common ones only if nothing else is left), any two of which
    must match. Requiring two terms keeps results relevant; using rare terms keeps the GIN
    scan short."""
    seen: dict[str, int] = {}
    for position, lexeme in enumerate(lexemes):
        if not lexeme.isdigit() and lexeme not in seen:
            seen[lexeme] = position
    ranked = sorted(seen, key=lambda lx: (frequencies.get(lx, 0.0), seen[lx]))
    telling = [lx for lx in ranked if frequencies.get(lx, 0.0) <= COMMON_LEXEME][:QUERY_TERMS]
    if len(telling) < 2:
        telling = ranked[:3]
    terms = ["'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in telling]
    if not terms:
        return None
    if len(terms) <= 2:
        return " & ".join(terms)
    return " | ".join(f"({a} & {b})" for i, a in enumerate(terms) for b in terms[i + 1:])


def _is_checkpoint_of(write: _Write, goal_uid: str) -> bool:
    return write.op in ("checkpoint", "drop_checkpoint") and write.args["goal_uid"] == goal_uid


def _action(action: Action | Mapping[str, Any] | tuple[str, str] | str) -> dict[str, str]:
    if isinstance(action, Action):
        return {"tool": action.tool, "outcome": action.outcome}
    if isinstance(action, Mapping):
        return {"tool": str(action.get("tool", "")), "outcome": str(action.get("outcome", ""))}
    if isinstance(action, str):
        return {"tool": action, "outcome": ""}
    tool, outcome = action
    return {"tool": str(tool), "outcome": str(outcome)}


def _clean(value: Any) -> Any:
    """`value` without NUL characters, which PostgreSQL text and jsonb cannot hold (tool
    output sometimes has them)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _short(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _lesson_text(row: Mapping[str, Any]) -> str:
    """A pattern as one or two sentences for a prompt."""
    task = _short(row["task"], 120)
    succeeded, failed = row["success_count"], row["failure_count"]
    total = succeeded + failed
    if row["kind"] == "error":
        times = "once" if total == 1 else f"{total} times"
        text = f'For goals like "{task}", the error "{_short(row["detail"], 200)}" came up {times}'
        if succeeded and row["outcome"]:
            text += f" ({succeeded} still succeeded, e.g.: {_short(row['outcome'], 160)})"
        return text + "."
    steps = _short(row["detail"], 240)
    result = f" Result: {_short(row['outcome'], 160)}." if row["outcome"] else ""
    if succeeded * 2 >= total:
        return f'For goals like "{task}", this worked {succeeded}/{total} times: {steps}.{result}'
    return (f'For goals like "{task}", this worked only {succeeded}/{total} times: {steps}; '
            f"consider another approach.")
