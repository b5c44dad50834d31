"""The knowledge base's two hot paths under tenancy: lessons lookups by namespaces' own logins (row-level
security on tables, overseer_lessons() for the lookup), and checkpoint saves by a login against the
same saves by the tables' owner (row-level security bypassed, as in the single pool before).

    python -m e2e.bench.knowledge [--experiences 1000000] [--queries 200] [--docs docs/performance.md]
                                  [--json PATH]

PostgreSQL runs here (fsync and synchronous commit on) in a throwaway folder. `experiences`
synthetic experiences are seeded into namespace `bench` (one every 30 s, the newest now), and 1% as
many into namespace `small`, spread over the same time: a small team beside a big one. Then, in
interleaved rounds, the same goal descriptions (drawn from the seed's vocabulary) are looked up:
- by `bench`'s login (its own rows only),
- by `small`'s login (its 1% among everyone's rows).
Each knowledge base's first lookup also counts its lexeme frequencies (once per process, i.e. per
goal pod); it is reported apart. Then the plans of the lessons query inside overseer_lessons()
(auto_explain with ANALYZE and BUFFERS, as `bench`'s and `small`'s logins call it) for a description
of common words and one of rare words. Last, checkpoint saves (the three of a round of calls with
side effects, 100 turns stored) by the owner and by a namespace's login.

The synthetic experiences (seed_experiences) are the benchmarks' own: the product's schema has no
way to make them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

from e2e.bench.docs import write_section
from e2e.bench.loop import DurablePostgres, checkpoint_samples, log, machine, stats_ms
from overseer.agent.knowledge import KnowledgeBase
from overseer.agent.knowledge.lessons import LESSONS, lexeme_frequencies, search_query
from overseer.operator.knowledge_tenants import provision_login

SECTION = ("Knowledge base", "<!-- knowledge:begin (written by python -m e2e.bench.knowledge --docs) -->",
           "<!-- knowledge:end -->")
VERBS = ["Fix", "Add", "Update", "Refactor", "Migrate", "Debug", "Upgrade", "Document"]
OBJECTS = ["the flaky tests", "the ci job", "a memory leak", "the timeout", "the api", "the config", "the build",
           "the retries", "the schema", "the parser tests"]
OWNERS = ["payment", "order", "user", "search", "report", "billing", "shipping", "ledger", "pricing", "audit"]
THINGS = ["parser", "scheduler", "service", "worker", "client", "controller", "cache", "queue", "gateway", "router"]
HISTORY = 100
PLANS = {
    "common": "Fix the flaky tests in the payment parser",  # each word in 1% of experiences or more
    "rare": "Look into kw1234 and kw1717 in the ledger",    # one word in none, two in 0.1% each
}

# Synthetic experiences: templated tasks over a skewed set of components, a few approaches with
# different success rates, errors that differ in numbers and paths, and two of 2,000 rare words
# ("kw" and a number) in each description.
SEED = r"""
WITH words AS (
    SELECT ARRAY['fix', 'add', 'update', 'refactor', 'migrate', 'debug', 'upgrade', 'document',
                 'speed up', 'remove', 'rename', 'review'] AS verbs,
           ARRAY['the flaky tests', 'the ci job', 'a memory leak', 'the timeout', 'the docs',
                 'the api', 'the config', 'the build', 'the deployment', 'the metrics', 'the logging',
                 'the error handling', 'the retries', 'the schema', 'the parser tests'] AS objects,
           ARRAY['payment', 'order', 'user', 'search', 'report', 'image', 'email', 'session',
                 'token', 'inventory', 'billing', 'shipping', 'catalog', 'audit', 'export',
                 'import', 'webhook', 'ledger', 'pricing', 'review'] AS owners,
           ARRAY['parser', 'scheduler', 'service', 'worker', 'client', 'controller', 'exporter',
                 'importer', 'validator', 'cache', 'queue', 'gateway', 'router', 'store',
                 'indexer', 'renderer', 'notifier', 'resolver', 'planner', 'syncer'] AS things,
           ARRAY['[{"tool":"bash","outcome":"pytest -x: 1 failed"},{"tool":"edit_file","outcome":"fixed"},'
                 '{"tool":"bash","outcome":"pytest: passed"}]',
                 '[{"tool":"read_file"},{"tool":"edit_file"},{"tool":"bash","outcome":"make test"}]',
                 '[{"tool":"bash","outcome":"git log"},{"tool":"read_file"},{"tool":"edit_file"}]',
                 '[{"tool":"web_fetch"},{"tool":"edit_file"},{"tool":"bash","outcome":"build"}]',
                 '[{"tool":"bash","outcome":"kubectl logs"},{"tool":"spawn_goal"}]',
                 '[{"tool":"edit_file"}]']::jsonb[] AS approaches,
           ARRAY[0.9, 0.75, 0.6, 0.5, 0.35, 0.2] AS rates
), draws AS (
    SELECT g, 1 + floor(random() * 12)::int AS v, 1 + floor(random() * 15)::int AS o,
           1 + floor(power(random(), 2) * 20)::int AS ow, 1 + floor(power(random(), 2) * 20)::int AS th,
           1 + floor(random() * 6)::int AS a, random() AS r, random() AS e,
           %(until)s::timestamptz - (%(n)s::integer - g) * %(step)s::interval AS at
    FROM generate_series(1, %(n)s::integer) g
), inserted AS (
    INSERT INTO experiences (id, goal_uid, goal_name, namespace, agent, description, context_summary,
                             actions, outcome, success, tokens, duration_seconds, error, created_at)
    SELECT gen_random_uuid(), gen_random_uuid()::text, 'seed-' || g, %(namespace)s, %(agent)s,
           initcap(w.verbs[d.v]) || ' ' || w.objects[d.o] || ' in the ' || w.owners[d.ow] || ' '
               || w.things[d.th] || '. Details: kw' || floor(random() * 2000)::int || ' kw'
               || floor(random() * 2000)::int || '.',
           '', w.approaches[d.a],
           CASE WHEN d.r < w.rates[d.a] THEN 'done, checks pass' ELSE 'gave up' END,
           d.r < w.rates[d.a], (1000 + random() * 50000)::bigint, random() * 600,
           CASE WHEN d.r < w.rates[d.a] AND d.e > 0.1 THEN NULL
                ELSE (ARRAY['TimeoutError: timed out after ' || floor(d.e * 300)::int || ' seconds',
                            'FileNotFoundError: /tmp/build-' || floor(d.e * 1e6)::int || '/out.log',
                            'pytest: ' || floor(d.e * 40)::int || ' failed in tests/test_'
                                || w.things[d.th] || '.py',
                            'exit status ' || floor(d.e * 255)::int,
                            'HTTP 503 from gateway after ' || floor(d.e * 9000)::int || ' ms']
                     )[1 + floor(d.e * 5)::int]
           END,
           d.at
    FROM draws d, words w
    ORDER BY d.at
    RETURNING 1
)
SELECT count(*) FROM inserted
"""


async def seed_experiences(dsn: str, namespace: str, n: int, agent: str = "bench", batch: int = 50_000,
                           step_seconds: float = 30.0) -> int:
    """Insert `n` synthetic experiences into `namespace` (their patterns follow by the schema's
    trigger): one every `step_seconds`, the newest now, in time order as real ones arrive. `dsn`
    is the tables' owner, or the namespace's own login."""
    done = 0
    end = datetime.now(timezone.utc)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while done < n:
            size = min(batch, n - done)
            until = end - timedelta(seconds=step_seconds * (n - done - size))
            cur = await conn.execute(SEED, {"n": size, "agent": agent, "until": until,
                                            "step": timedelta(seconds=step_seconds), "namespace": namespace})
            row = await cur.fetchone()
            assert row is not None
            done += row[0]
        await conn.execute("ANALYZE experiences")
        await conn.execute("ANALYZE patterns")
    return done


def descriptions(n: int) -> list[str]:
    rng = random.Random(7)
    return [f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} in the {rng.choice(OWNERS)} {rng.choice(THINGS)}"
            for _ in range(n)]


async def seed(admin: str, experiences: int) -> dict[str, float]:
    took = {}
    for namespace, n, step in (("bench", experiences, 30.0), ("small", max(1, experiences // 100), 3000.0)):
        start = time.perf_counter()
        await seed_experiences(admin, namespace, n, agent="coder", step_seconds=step)
        took[namespace] = time.perf_counter() - start
        log(f"seeded {n} experiences into {namespace} in {took[namespace]:.0f} s")
    return took


async def lookups(variants: dict[str, tuple[str, str]], queries: list[str]) -> dict[str, dict[str, Any]]:
    """Each variant looks up every query, variants interleaved query by query."""
    bases = {name: KnowledgeBase(dsn, namespace=ns) for name, (dsn, ns) in variants.items()}
    out: dict[str, dict[str, Any]] = {name: {"first": 0.0, "times": [], "found": 0} for name in variants}
    try:
        for name, kb in bases.items():
            assert await kb.open(), name
            start = time.perf_counter()
            await kb.lessons(queries[0], "coder")
            out[name]["first"] = time.perf_counter() - start
        for query in queries[1:]:
            for name, kb in bases.items():
                start = time.perf_counter()
                found = await kb.lessons(query, "coder")
                out[name]["times"].append(time.perf_counter() - start)
                out[name]["found"] += bool(found)
    finally:
        for kb in bases.values():
            await kb.close()
    return out


# EXPLAIN of a call shows only a Function Scan: auto_explain logs the statement inside the function,
# sent back to this session at level LOG.
AUTO_EXPLAIN = ["LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0", "SET auto_explain.log_analyze = on",
                "SET auto_explain.log_buffers = on", "SET auto_explain.log_nested_statements = on",
                "SET client_min_messages = log"]


async def plans(admin: str, login: str, namespace: str) -> dict[str, dict[str, str]]:
    """The plan of the lessons query inside overseer_lessons() for each of PLANS, as `login` calls
    it, run once before to warm the cache as a goal pod's earlier lookups do. The owner (a superuser
    here) loads auto_explain, then takes the login's session authorization: the function finds its
    tenant from session_user, as for the login itself."""
    out = {}
    role = psycopg.conninfo.conninfo_to_dict(login)["user"]
    logged: list[str] = []
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: logged.append(notice.message_primary or ""))
        for statement in AUTO_EXPLAIN:
            await conn.execute(statement)
        await conn.execute(psycopg.sql.SQL("SET SESSION AUTHORIZATION {}").format(psycopg.sql.Identifier(role)))
        frequencies = await lexeme_frequencies(conn, namespace)
        for case, description in PLANS.items():
            query = await search_query(conn, description, frequencies)
            assert query is not None, description
            params = {"query": query, "agent": "coder", "limit": 5, "candidates": 50}
            await conn.execute(LESSONS, params)
            logged.clear()
            await conn.execute(LESSONS, params)
            [message] = [m for m in logged if " on experiences e " in m]
            duration = re.match(r"duration: (\S+ ms)", message)
            lines = message.splitlines()
            top = next(i for i, line in enumerate(lines) if re.match(r"\S.*\(cost=", line))
            out[case] = {"description": description, "query": query, "plan": "\n".join(lines[top:]),
                         "time": duration.group(1) if duration else "?"}
    return out


def plan_summary(plan: str, time: str) -> dict[str, str]:
    """How a plan reaches the namespace's own experiences (the scan under `e`, and the index of a
    bitmap scan), the buffers of the whole execution and its time."""
    lines = [line.strip() for line in plan.splitlines()]
    at = next(i for i, line in enumerate(lines) if " on experiences e " in line)
    scan = re.sub(r"^->\s*| on experiences e\s+\(.*$", "", lines[at])
    if scan.startswith("Bitmap Heap Scan"):
        indexes = {m.group(1) for line in lines[at:at + 40]
                   for m in [re.search(r"Bitmap Index Scan on (experiences\S*)", line)] if m}
        scan += " of " + ", ".join(sorted(indexes))
    removed = next((line.split(":")[1].strip() for line in lines[at + 1:at + 4] if line.startswith("Rows Removed by Filter")),
                   "0")
    returned = re.search(r"actual time=\S+ rows=(\d+)", lines[at])
    return {"scan": scan, "rows": returned.group(1) if returned else "0", "removed": removed,
            "buffers": next(line.removeprefix("Buffers: ") for line in lines if line.startswith("Buffers:")),
            "time": time}


async def checkpoints(variants: dict[str, tuple[str, str]], goals: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in variants}
    bases = {name: KnowledgeBase(dsn, namespace=ns) for name, (dsn, ns) in variants.items()}
    try:
        for kb in bases.values():
            await kb.open()
        for g in range(goals):
            for name, kb in bases.items():
                out[name] += await checkpoint_samples(kb.for_goal(f"ckpt-{name}-{g}"), HISTORY)
    finally:
        for kb in bases.values():
            await kb.close()
    return out


def render(info: dict[str, Any], command: str, result: dict[str, Any]) -> str:
    n = result["experiences"]
    lines = [
        f"{info['date']}; {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM; "
        f"PostgreSQL {result['postgres']} (fsync on); "
        f"`{command}`", "",
        f"Lessons for a new goal with {n:,} experiences in namespace `bench` and {max(1, n // 100):,} in `small` "
        f"(spread over the same {n * 30 / 86400:.0f} days), {result['queries']} goal descriptions, interleaved, "
        "each by the namespace's own login (`overseer_lessons()`).", "",
        "| who looks up | rows it may read | median | p95 | max | first lookup of a process (with lexeme frequencies) "
        "| lookups with lessons |",
        "|---|---|---|---|---|---|---|",
    ]
    rows_of = {"bench": f"{n:,} (its own)", "small": f"{max(1, n // 100):,} (its own)"}
    for name, label in (("bench", "`bench`'s login"), ("small", "`small`'s login")):
        r = result["lessons"][name]
        s = stats_ms(r["times"])
        lines.append(f"| {label} | {rows_of[name]} | {s['median']:.2f} ms | {s['p95']:.2f} ms | {s['max']:.1f} ms "
                     f"| {r['first'] * 1000:.1f} ms | {r['found']}/{len(r['times'])} |")
    lines += ["", f"Checkpoint saves, {HISTORY} turns stored, the three saves of a round of calls with side effects "
              f"({result['goals']} goals each, interleaved):", "",
              "| who saves | saves | median | p95 | max |", "|---|---|---|---|---|"]
    for name, label in (("owner", "the owner (no row-level security)"), ("bench", "`bench`'s login (row-level security)")):
        s = stats_ms(result["checkpoints"][name])
        lines.append(f"| {label} | {s['n']} | {s['median']:.2f} ms | {s['p95']:.2f} ms | {s['max']:.1f} ms |")
    lines += ["", f"The plans of the lessons query inside `overseer_lessons()` at {n:,} experiences, the second call "
              "of each (auto_explain with ANALYZE and BUFFERS; buffers are 8 kB pages, `hit` in PostgreSQL's cache, "
              "`read` from the file system):", "",
              "| words | whose login | how it reaches the namespace's experiences | rows it returns (filtered out) "
              "| buffers | time |",
              "|---|---|---|---|---|---|"]
    for case in PLANS:
        for who in ("bench", "small"):
            p = result["plans"][who][case]
            x = plan_summary(p["plan"], p["time"])
            lines.append(f"| {case} | `{who}`'s | {x['scan']} | {x['rows']} ({x['removed']}) | {x['buffers']} "
                         f"| {x['time']} |")
    for case in PLANS:
        p = result["plans"]["bench"][case]
        lines += ["", f"<details><summary>The {case} words' plan for `bench`'s login: \"{p['description']}\", "
                  f"searched as <code>{p['query']}</code></summary>", "", "```text", p["plan"], "```", "", "</details>"]
    return "\n".join(lines) + "\n"


async def run(admin: str, args: argparse.Namespace) -> dict[str, Any]:
    logins = {ns: await provision_login(admin, ns) for ns in ("bench", "small")}
    took = await seed(admin, args.experiences)
    with psycopg.connect(admin) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    queries = descriptions(args.queries + 1)
    variants = {"bench": (logins["bench"], "bench"), "small": (logins["small"], "small")}
    log(f"looking up lessons for {args.queries} descriptions, two logins")
    lessons = await lookups(variants, queries)
    log("explaining the lessons query: common and rare words")
    explained = {ns: await plans(admin, logins[ns], ns) for ns in ("bench", "small")}
    log("saving checkpoints, two ways")
    saves = await checkpoints({"owner": (admin, "bench"), "bench": (logins["bench"], "bench")}, args.goals)
    return {"experiences": args.experiences, "queries": args.queries, "goals": args.goals, "seeded_seconds": took,
            "postgres": version, "lessons": lessons, "plans": explained, "checkpoints": saves}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m e2e.bench.knowledge", description=__doc__.splitlines()[0])
    p.add_argument("--experiences", type=int, default=1_000_000, help="experiences of namespace bench (default 1000000)")
    p.add_argument("--queries", type=int, default=200, help="lessons lookups per login (default 200)")
    p.add_argument("--goals", type=int, default=50, help="goals whose checkpoints are saved per login (default 50)")
    p.add_argument("--docs", type=Path, help="write the results into this file's Knowledge base section")
    p.add_argument("--json", type=Path, help="write the raw results here as JSON")
    args = p.parse_args(argv)
    command = "python -m e2e.bench.knowledge " + " ".join(argv)
    base = Path(tempfile.mkdtemp(prefix="overseer-bench-knowledge-"))
    postgres = DurablePostgres(base)
    try:
        log(f"starting PostgreSQL in {base}")
        postgres.init()
        result = asyncio.run(run(postgres.dsn, args))
    finally:
        try:
            postgres.stop()
        except RuntimeError as e:
            log(f"stopping PostgreSQL: {e}")
        shutil.rmtree(base, ignore_errors=True)
    info = machine(base.parent)
    text = render(info, command, result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.docs:
        write_section(args.docs, *SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
