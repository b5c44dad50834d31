"""A goal's checkpoint in PostgreSQL: its messages appended one row each (a save never rewrites
the history before it), its loop state beside them, and `GoalCheckpoints`, the store the
execution loop is given."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from ..checkpoint import Checkpoint
from .records import Message
from .spool import Write

if TYPE_CHECKING:
    from .store import KnowledgeBase

logger = logging.getLogger(__name__)


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


LOAD_CHECKPOINT = """
SELECT c.iteration, c.todos, c.counters, c.updated_at,
       coalesce((SELECT jsonb_agg(m.message ORDER BY m.seq) FROM checkpoint_messages m
                 WHERE m.namespace = c.namespace AND m.goal_uid = c.goal_uid AND m.seq < c.message_count),
                '[]') AS messages
FROM checkpoints c WHERE c.namespace = %(namespace)s AND c.goal_uid = %(goal_uid)s
"""

# A checkpoint in the usual case, as one statement (one round trip, one transaction): the row
# holds the `base` messages the writer counted, so the new ones go after them. No row updated
# means another case (a first save, a replay, a mismatch), which apply_checkpoint handles.
APPEND_CHECKPOINT = """
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


DIVERGED = object()  # apply_checkpoint: the stored conversation is not the writer's


async def apply_checkpoint(conn: psycopg.AsyncConnection[Any], write: Write) -> int | object:
    """Append (or replace) a goal's messages and store its state; returns the message count,
    or DIVERGED (writing nothing) when the stored messages do not match the writer's.

    `base` is how many messages the writer believed were stored before these (None: it never
    read the checkpoint, so it believes there were none): a replay of a write that did commit,
    its answer lost with the connection, adds nothing twice."""
    a = write.args
    ns, goal, messages = a["namespace"], a["goal_uid"], a["messages"]
    state = a["state"]
    if not a["replace"] and a["base"] is not None and state is not None:
        count = a["base"] + len(messages)
        cur = await conn.execute(APPEND_CHECKPOINT, {
            "namespace": ns, "goal_uid": goal, "base": a["base"], "count": count, "iteration": state["iteration"],
            "todos": Jsonb(state["todos"]), "counters": Jsonb(state["counters"]), "write_id": write.id,
            "messages": Jsonb(messages)})
        updated = await cur.fetchone()
        if updated is not None and updated[0]:
            return int(count)
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
                return DIVERGED
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


async def apply_drop(conn: psycopg.AsyncConnection[Any], write: Write) -> None:
    await conn.execute("DELETE FROM checkpoints WHERE namespace = %s AND goal_uid = %s",
                       (write.args["namespace"], write.args["goal_uid"]))

