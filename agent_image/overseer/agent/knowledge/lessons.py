"""Experiences and the lessons drawn from them. Patterns are extracted inside PostgreSQL by a
statement trigger on `experiences` (knowledge_schema), so one recorded goal and a million
seeded ones go through the same code. Lessons for a new goal are found through the recent
experiences most like it (full-text search) and the patterns those followed, ranked by text
rank, recency and how often the pattern worked."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .records import Lesson, clean
from .spool import Write

QUERY_TERMS = 6          # terms of a new goal's description used to find similar experiences
COMMON_LEXEME = 0.5      # share of experiences above which a term says little about a goal
FREQUENCY_TTL = 300.0    # seconds the lexeme frequencies are cached
FREQUENCY_SAMPLE = 2000  # recent experiences the lexeme frequencies are counted in
FREQUENT = 0.01          # share of them below which a lexeme counts as rare (frequency 0)
FREQUENCY_LEAST = 200    # fewer experiences say little about frequencies (and every search is cheap)


async def lexeme_frequencies(conn: psycopg.AsyncConnection[Any], namespace: str) -> dict[str, float]:
    """Share of the namespace's recent experiences holding each common lexeme."""
    cur = await conn.execute(LEXEME_FREQUENCIES, {"namespace": namespace, "sample": FREQUENCY_SAMPLE,
                                                  "common": FREQUENT, "least": FREQUENCY_LEAST})
    return {lexeme: float(f) for lexeme, f in await cur.fetchall()}


async def search_query(conn: psycopg.AsyncConnection[Any], description: str,
                       frequencies: Mapping[str, float]) -> str | None:
    """The tsquery that finds experiences like a goal of this description (see match_query)."""
    cur = await conn.execute(QUERY_LEXEMES, (clean(description[:4000]),))
    return match_query([row[0] for row in await cur.fetchall()], frequencies)


async def find_lessons(conn: psycopg.AsyncConnection[Any], query: str, agent: str, limit: int,
                       candidates: int) -> list[Lesson]:
    """Lessons from the login's own namespace and those sharing with it (see LESSONS)."""
    params = {"query": query, "agent": agent, "limit": limit, "candidates": candidates}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LESSONS, params)
        rows = await cur.fetchall()
    return [Lesson(id=r["id"], kind=r["kind"], text=lesson_text(r), score=float(r["score"]),
                   success_count=r["success_count"], failure_count=r["failure_count"],
                   usage_count=r["usage_count"]) for r in rows]


async def apply_experience(conn: psycopg.AsyncConnection[Any], write: Write) -> None:
    params = dict(write.args, id=uuid.UUID(hex=write.id), actions=Jsonb(write.args["actions"]))
    await conn.execute(INSERT_EXPERIENCE, params)


async def apply_lesson_use(conn: psycopg.AsyncConnection[Any], write: Write) -> None:
    await conn.execute(LESSON_USE, dict(write.args, write_id=write.id))


def match_query(lexemes: Sequence[str], frequencies: Mapping[str, float]) -> str | None:
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


def short(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def lesson_text(row: Mapping[str, Any]) -> str:
    """A pattern as one or two sentences for a prompt."""
    task = short(row["task"], 120)
    succeeded, failed = row["success_count"], row["failure_count"]
    total = succeeded + failed
    if row["kind"] == "error":
        times = "once" if total == 1 else f"{total} times"
        text = f'For goals like "{task}", the error "{short(row["detail"], 200)}" came up {times}'
        if succeeded and row["outcome"]:
            text += f" ({succeeded} still succeeded, e.g.: {short(row['outcome'], 160)})"
        return text + "."
    steps = short(row["detail"], 240)
    result = f" Result: {short(row['outcome'], 160)}." if row["outcome"] else ""
    if succeeded * 2 >= total:
        return f'For goals like "{task}", this worked {succeeded}/{total} times: {steps}.{result}'
    return (f'For goals like "{task}", this worked only {succeeded}/{total} times: {steps}; '
            f"consider another approach.")


QUERY_LEXEMES = """
SELECT u.lexeme FROM unnest(to_tsvector('english', %s)) AS u ORDER BY u.positions[1] LIMIT 24
"""

# How often each common lexeme occurs in the namespace's recent experiences. Not from pg_stats:
# those cover every tenant's rows, and PostgreSQL hides them from a login under row-level
# security for that reason.
LEXEME_FREQUENCIES = """
SELECT f.word, f.ndoc::float8 / t.total AS frequency
FROM (SELECT greatest(count(*), 1) AS total
      FROM (SELECT 1 FROM experiences WHERE namespace = %(namespace)s
            ORDER BY created_at DESC LIMIT %(sample)s) recent) t,
     ts_stat(format('SELECT search FROM experiences WHERE namespace = %%L ORDER BY created_at DESC LIMIT %%s',
                    %(namespace)s::text, %(sample)s::integer)) f
WHERE t.total >= %(least)s AND f.ndoc >= %(common)s * t.total
"""

# Lessons are found by the schema's overseer_lessons() (knowledge_schema, migration 5): it reads as
# the tables' owner for the namespace of the login that calls it, so the text-search index stays
# usable under row-level security. The namespace is not an argument: a login reads its own and
# what is shared with it, whatever it asks for.
LESSONS = """
SELECT id, kind, task, detail, outcome, success_count, failure_count, usage_count, score
FROM overseer_lessons(%(query)s::tsquery, %(agent)s, %(limit)s, %(candidates)s)
"""

INSERT_EXPERIENCE = """
INSERT INTO experiences (id, goal_uid, goal_name, namespace, agent, description, context_summary, actions,
                         outcome, success, tokens, duration_seconds, error)
VALUES (%(id)s, %(goal_uid)s, %(goal_name)s, %(namespace)s, %(agent)s, %(description)s, %(context_summary)s,
        %(actions)s, %(outcome)s, %(success)s, %(tokens)s, %(duration_seconds)s, %(error)s)
ON CONFLICT (id) DO NOTHING
"""

LESSON_USE = """
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
