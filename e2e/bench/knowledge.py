"""What keeping tenants apart costs the knowledge base: lessons lookups and checkpoint saves with a
namespace's own login (row-level security on) against the same calls by the tables' owner (row-level
security bypassed, as in the single pool before).

    python -m e2e.bench.knowledge [--experiences 1000000] [--queries 200] [--docs docs/performance.md]
                                  [--json PATH]

PostgreSQL runs here (fsync and synchronous commit on) in a throwaway folder. `experiences`
synthetic experiences are seeded into namespace `bench` (one every 30 s, the newest now), and 1% as
many into namespace `small`, spread over the same time: a small team beside a big one. Then, in
interleaved rounds, the same goal descriptions (drawn from the seed's vocabulary) are looked up:
- by the owner, for `bench` (row-level security bypassed: the same query, without the policies),
- by `bench`'s login (row-level security: its own rows only),
- by `small`'s login (its 1% among everyone's rows).
Each knowledge base's first lookup also counts its lexeme frequencies (once per process, i.e. per
goal pod); it is reported apart. Last, checkpoint saves (the three of a round of calls with side
effects, 100 turns stored) by the owner and by a namespace's login.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from e2e.bench.docs import write_section
from e2e.bench.loop import DurablePostgres, checkpoint_samples, log, machine, stats_ms
from overseer.agent.knowledge import KnowledgeBase
from overseer.operator.knowledge_tenants import provision_login

SECTION = ("Knowledge base", "<!-- knowledge:begin (written by python -m e2e.bench.knowledge --docs) -->",
           "<!-- knowledge:end -->")
VERBS = ["Fix", "Add", "Update", "Refactor", "Migrate", "Debug", "Upgrade", "Document"]
OBJECTS = ["the flaky tests", "the ci job", "a memory leak", "the timeout", "the api", "the config", "the build",
           "the retries", "the schema", "the parser tests"]
OWNERS = ["payment", "order", "user", "search", "report", "billing", "shipping", "ledger", "pricing", "audit"]
THINGS = ["parser", "scheduler", "service", "worker", "client", "controller", "cache", "queue", "gateway", "router"]
HISTORY = 100


def descriptions(n: int) -> list[str]:
    rng = random.Random(7)
    return [f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} in the {rng.choice(OWNERS)} {rng.choice(THINGS)}"
            for _ in range(n)]


async def seed(admin: str, experiences: int) -> dict[str, float]:
    took = {}
    for namespace, n, step in (("bench", experiences, 30.0), ("small", max(1, experiences // 100), 3000.0)):
        start = time.perf_counter()
        async with KnowledgeBase(admin, namespace=namespace) as kb:
            await kb.seed_experiences(n, agent="coder", step_seconds=step)
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
        f"(spread over the same {n * 30 / 86400:.0f} days), {result['queries']} goal descriptions, interleaved. "
        "The owner's login bypasses row-level security: the same query without the policies, so the difference "
        "is what they cost.", "",
        "| who looks up | rows it may read | median | p95 | max | first lookup of a process (with lexeme frequencies) "
        "| lookups with lessons |",
        "|---|---|---|---|---|---|---|",
    ]
    rows_of = {"owner": f"all {n + max(1, n // 100):,}", "bench": f"{n:,} (its own)",
               "small": f"{max(1, n // 100):,} (its own)"}
    for name, label in (("owner", "the owner (no row-level security), for `bench`"),
                        ("bench", "`bench`'s login (row-level security)"),
                        ("small", "`small`'s login (row-level security)")):
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
    return "\n".join(lines) + "\n"


async def run(admin: str, args: argparse.Namespace) -> dict[str, Any]:
    logins = {ns: await provision_login(admin, ns) for ns in ("bench", "small")}
    took = await seed(admin, args.experiences)
    with psycopg.connect(admin) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    queries = descriptions(args.queries + 1)
    variants = {"owner": (admin, "bench"), "bench": (logins["bench"], "bench"), "small": (logins["small"], "small")}
    log(f"looking up lessons for {args.queries} descriptions, three ways")
    lessons = await lookups(variants, queries)
    log("saving checkpoints, two ways")
    saves = await checkpoints({"owner": (admin, "bench"), "bench": (logins["bench"], "bench")}, args.goals)
    return {"experiences": args.experiences, "queries": args.queries, "goals": args.goals, "seeded_seconds": took,
            "postgres": version, "lessons": lessons, "checkpoints": saves}


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
