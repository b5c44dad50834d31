"""Fault scenarios on the data plane: goal pods, the model, PostgreSQL, Redis, a full disk.

Each scenario runs real goals (a real overseer-agent process per goal pod, talking to the scripted
model through the real SDK) while one part is broken, and counts what came of them: goals ended,
tool calls repeated, knowledge-base rows written and then missing, model calls made per fault.
`SCENARIOS[name](ctx, full)` returns the scenario's `Row`; the reduced form (full=False) keeps
all of them together to a few minutes.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis

from e2e.agent_runner import AgentRunner
from e2e.chaos.context import Context
from e2e.chaos.table import Row
from e2e.harness import wait_for
from e2e.world import World
from overseer.live import goal_key
from overseer.operator.workspace import claim_name

ENDED = ("Succeeded", "Failed", "Cancelled")
WORKSPACE = "  workspace: {size: 1Gi}"


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"reply": [{"tool_use": {"name": name, "input": args}}]}


def text(value: str) -> dict[str, Any]:
    return {"reply": [{"text": value}]}


def step(i: int, seconds: float = 0.0) -> dict[str, Any]:
    """A bash call that leaves `begin-i` and then `end-i` in calls.txt: a finished call has its end
    line, a call cut off mid-run its begin line only."""
    pause = f"sleep {seconds}; " if seconds else ""
    return tool("bash", command=f"echo begin-{i} >> calls.txt; {pause}echo end-{i} >> calls.txt")


def finished_calls(workspace: Path) -> list[str]:
    lines = (workspace / "calls.txt").read_text().split() if (workspace / "calls.txt").exists() else []
    return [line for line in lines if line.startswith("end-")]


class PodWatch:
    """Samples a namespace's goal pods while a scenario runs: a goal with two live pods at once (or
    two pods of one attempt) is a duplicate."""

    def __init__(self, ctx: Context, namespace: str, interval: float = 0.3) -> None:
        self.ctx, self.namespace, self.interval = ctx, namespace, interval
        self.duplicates: set[str] = set()
        self.pods: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"pod-watch-{namespace}")

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                pods = self.ctx.k8s.core.list_namespaced_pod(self.namespace, label_selector="overseer.dev/goal").items
            except Exception:  # noqa: BLE001 - a sample missed is not a finding
                continue
            live: dict[str, int] = {}
            attempts: dict[tuple[str, str], set[str]] = {}
            for pod in pods:
                goal = pod.metadata.labels["overseer.dev/goal"]
                self.pods.setdefault(goal, set()).add(pod.metadata.name)
                attempt = (pod.metadata.labels or {}).get("overseer.dev/attempt", "")
                attempts.setdefault((goal, attempt), set()).add(pod.metadata.name)
                if pod.status.phase not in ("Succeeded", "Failed") and pod.metadata.deletion_timestamp is None:
                    live[goal] = live.get(goal, 0) + 1
            self.duplicates |= {g for g, n in live.items() if n > 1}
            self.duplicates |= {g for (g, a), names in attempts.items() if a and len(names) > 1}


def tally(row: Row, world: World, goals: list[str]) -> Row:
    """Fill goals in / finished / failed (by reason) / lost from the goals' status."""
    row.goals_in = len(goals)
    for name in goals:
        status = (world.get("goal", name) or {}).get("status") or {}
        if status.get("phase") == "Succeeded":
            row.finished += 1
        elif status.get("phase") in ("Failed", "Cancelled"):
            complete = next((c for c in status.get("conditions") or [] if c["type"] == "Complete"), {})
            reason = complete.get("reason") or status.get("failureReason")
            if reason:
                row.failed += 1
                row.reasons[reason] = row.reasons.get(reason, 0) + 1
            else:
                row.lost += 1
        else:
            row.lost += 1
    return row


def wait_ended(world: World, goals: list[str], timeout: float) -> None:
    try:
        wait_for(lambda: all(world.phase(g) in ENDED for g in goals), timeout=timeout, interval=1,
                 description=f"goals {goals} ended")
    except Exception:  # noqa: BLE001 - a goal that never ends is counted as lost by tally
        pass


# ---- an agent killed mid-goal ----------------------------------------------------------------


def _checkpoint_mid_write(folder: Path) -> bool:
    """Messages appended beyond what the state file vouches for: a save between its two writes."""
    try:
        count = json.loads((folder / "state.json").read_text())["message_count"]
        with open(folder / "messages.jsonl") as f:
            return sum(1 for line in f if line.strip()) > count
    except (OSError, ValueError, KeyError):
        return False


def _checkpoint_readable(folder: Path) -> bool:
    """What a replaced pod loads: the state file parses and the messages it vouches for are whole."""
    try:
        count = json.loads((folder / "state.json").read_text())["message_count"]
        with open(folder / "messages.jsonl") as f:
            lines = [line for line in f if line.strip()][:count]
        return len(lines) == count and all(json.loads(line)["role"] for line in lines)
    except (OSError, ValueError, KeyError):
        return False


def agent_kills(ctx: Context, full: bool) -> Row:
    steps, kills = (12, 9) if full else (5, 3)
    started = time.monotonic()
    ns = ctx.namespace("agent-kills")
    world = ctx.world(ns, ctx.operator(ns))
    turns = [step(i, seconds=1.0) for i in range(1, steps + 1)] + [text(f"All {steps} steps done.")]
    model, runner = ctx.agents(world, {"long": turns}, spec=WORKSPACE)
    world.goal("long", retries=10)
    uid = wait_for(lambda: (world.get("goal", "long") or {}).get("metadata", {}).get("uid"), timeout=30)
    workspace = runner.claim_folder(claim_name("long"))
    folder = workspace / ".overseer" / "checkpoints" / uid
    moments = {"in a tool call": 0, "mid checkpoint write": 0, "after a checkpoint write": 0}
    unreadable = 0
    rng = random.Random(21)
    with PodWatch(ctx, ns) as watch:
        for k in range(kills):
            pod = _live_agent(world, runner, "long")
            if pod is None:
                break
            target = ("in a tool call", "mid checkpoint write")[k % 2]
            moment = _kill_at(runner, pod, workspace, folder, target, rng)
            moments[moment] += 1
            wait_for(lambda: runner.finished.get(pod) is not None or pod not in runner.processes, timeout=30,
                     description=f"agent of {pod} gone")
            unreadable += not _checkpoint_readable(folder)
        wait_ended(world, ["long"], timeout=120 + steps * 10)
    row = tally(Row("agent SIGKILL in tool calls and checkpoint writes",
                    f"one goal of {steps} bash calls; its agent SIGKILLed {sum(moments.values())} times"), world, ["long"])
    done = finished_calls(workspace)
    repeated = len(done) - len(set(done))
    missing = [f"end-{i}" for i in range(1, steps + 1) if f"end-{i}" not in done]
    rerun = sum(1 for line in (workspace / "calls.txt").read_text().split() if line.startswith("begin-")) - steps
    attempt = ((world.get("goal", "long") or {}).get("status") or {}).get("attempt")
    row.duplicate_pods = len(watch.duplicates)
    row.lost += 1 if (repeated or missing or unreadable) and row.lost == 0 else 0
    row.seconds = time.monotonic() - started
    row.notes = (f"kills: {', '.join(f'{v} {k}' for k, v in moments.items() if v)}; attempts {attempt}; "
                 f"finished calls repeated {repeated}, missing {len(missing)}; calls cut off and run again {rerun}; "
                 f"unreadable checkpoints {unreadable}")
    return row


def _live_agent(world: World, runner: AgentRunner, goal: str, timeout: float = 60) -> str | None:
    """The pod whose agent process runs the goal now (None once the goal has ended)."""
    def current() -> str | None | bool:
        if world.phase(goal) in ENDED:
            return False
        pod = ((world.get("goal", goal) or {}).get("status") or {}).get("pod")
        p = runner.processes.get(pod) if pod else None
        return pod if p is not None and p.proc.poll() is None else None
    found = wait_for(lambda: current() is not None and (current() or "done"), timeout=timeout, interval=0.1,
                     description=f"a live agent for goal {goal}")
    return found if isinstance(found, str) and found != "done" else None


def _kill_at(runner: AgentRunner, pod: str, workspace: Path, folder: Path, target: str,
             rng: random.Random) -> str:
    """SIGKILL pod's agent at the target moment: while a bash call sleeps (a begin line without its
    end), or between a checkpoint's message append and its state write (watched every millisecond);
    when the latter is not caught within 20 s, right after a checkpoint write. Returns the moment."""
    calls = workspace / "calls.txt"
    deadline = time.monotonic() + 20
    state = folder / "state.json"
    seen = state.stat().st_mtime_ns if state.exists() else 0
    while time.monotonic() < deadline:
        if target == "in a tool call":
            lines = calls.read_text().split() if calls.exists() else []
            if lines and lines[-1].startswith("begin-"):
                time.sleep(rng.uniform(0.1, 0.6))  # somewhere inside the call's second of sleep
                runner.kill(pod)
                return target
            time.sleep(0.02)
        else:
            if _checkpoint_mid_write(folder):
                runner.kill(pod)
                return target
            now = state.stat().st_mtime_ns if state.exists() else 0
            if now != seen and time.monotonic() > deadline - 5:
                runner.kill(pod)
                return "after a checkpoint write"
            seen = now
            time.sleep(0.001)
    runner.kill(pod)
    return "after a checkpoint write" if target != "in a tool call" else target


# ---- the model failing -------------------------------------------------------------------------


def model_faults(ctx: Context, full: bool) -> Row:
    """One goal per kind of model trouble, each for a stretch of consecutive calls; the model calls
    made per goal are counted against the calls the script needs (no stacked retries)."""
    n = 5 if full else 3
    started = time.monotonic()
    ns = ctx.namespace("model-faults")
    world = ctx.world(ns, ctx.operator(ns))
    work = [tool("bash", command="echo ok >> calls.txt"), text("Finished despite the model's trouble.")]
    kinds: dict[str, list[dict[str, Any]]] = {
        "rate-limited": [{"fault": {"status": 429, "retry_after": 1}}] * n,
        "overloaded": [{"fault": {"status": 529}}] * n,
        "server-error": [{"fault": {"status": 500}}] * n,
        "cut-stream": [{"fault": {"drop_after_events": 1}}] * n,
    }
    conversations = {name: [*faults, *work] for name, faults in kinds.items()}
    conversations["slow"] = [{**work[0], "delay": 20 if full else 5}, work[1]]
    expected = {name: len(turns) for name, turns in conversations.items()}
    # Longer than the loop's 8 attempts: the goal fails ModelUnavailable after exactly 8 calls (with
    # the SDK's retries stacked under the loop's, the 12 failures were used up and it finished).
    # Reduced: rate limits asking for 10 ms, so the 8 attempts take no time; full: the loop's own
    # backoff (about 2 minutes).
    fault = {"status": 529} if full else {"status": 429, "retry_after": 0.01}
    conversations["outage"] = [{"fault": fault}] * 12 + work
    expected["outage"] = 8
    model, runner = ctx.agents(world, conversations, max_goals=len(conversations))
    for name in conversations:
        world.goal(name, retries=0)
    goals = list(conversations)
    with PodWatch(ctx, ns) as watch:
        wait_ended(world, goals, timeout=400 if full else 120)
    row = tally(Row("model 429 / 529 / 500 / slow / cut streams",
                    f"{n} failed calls in a row per kind of fault, and 12 in a row (more than the agent's "
                    "8 attempts)"),
                world, goals)
    calls = {g: 0 for g in goals}
    for r in model.requests():
        if r.get("path", "/v1/messages") == "/v1/messages":
            goal = r["conversation"].split("/", 1)[-1]
            calls[goal] = calls.get(goal, 0) + 1
    extra = {g: calls[g] - expected[g] for g in goals if calls[g] != expected[g]}
    restarts = {g: len(watch.pods.get(g, ())) - 1 for g in goals if len(watch.pods.get(g, ())) > 1}
    row.duplicate_pods = len(watch.duplicates)
    row.seconds = time.monotonic() - started
    failures = "; ".join(f"{g}: {(world.get('goal', g) or {}).get('status', {}).get('message', '')[:160]}"
                         for g in goals if world.phase(g) != "Succeeded")
    row.notes = (f"model calls {sum(calls.values())} for {sum(expected.values())} the script needs"
                 + (f" (off by {extra})" if extra else "") + f"; pods restarted {sum(restarts.values())}; {failures}")
    return row


# ---- the model gateway killed -------------------------------------------------------------------

GOAL_BUDGET = 0.1
"""Dollars a goal of gateway-kill may spend (spec.budget.maxCostPerGoal): room for one call's worst
case (4,096 output tokens, about $0.06) held at a time, so a goal whose call was cut by a kill finds
its own dead hold when it asks again: it must be told to wait (429) until that hold lapses, not
fail BudgetExhausted."""


def spend(ctx: Context, uids: dict[str, str]) -> dict[str, tuple[int, float]]:
    """goal -> (rows, dollars) in the gateway's spend ledger."""
    with psycopg.connect(ctx.postgres.dsn) as db:
        exists = db.execute("SELECT to_regclass('gateway_spend') IS NOT NULL").fetchone()
        found = {} if not exists or not exists[0] else {r[0]: (int(r[1]), float(r[2])) for r in db.execute(
            "SELECT goal_uid, count(*), coalesce(sum(cost_usd), 0) FROM gateway_spend WHERE goal_uid = ANY(%s) "
            "GROUP BY goal_uid", (list(uids.values()),))}
    return {g: found.get(uid, (0, 0.0)) for g, uid in uids.items()}


def answered_calls(model: Any, goals: list[str]) -> dict[str, int]:
    """Calls the model answered per goal (a call asked twice, once per replica, counts twice)."""
    calls = {g: 0 for g in goals}
    for r in model.requests():
        if r.get("path", "/v1/messages") == "/v1/messages":
            goal = r["conversation"].split("/", 1)[-1]
            if goal in calls:
                calls[goal] += 1
    return calls


def settle_spend(ctx: Context, uids: dict[str, str], expected: dict[str, int], timeout: float = 30
                 ) -> dict[str, tuple[int, float]]:
    """The ledger once it holds the expected rows per goal (or after timeout: what it holds then)."""
    try:
        return wait_for(lambda: (rows := spend(ctx, uids)) and all(rows[g][0] >= n for g, n in expected.items())
                        and rows, timeout=timeout, interval=0.5, description="the spend rows of every answered call")
    except AssertionError:
        return spend(ctx, uids)


def gateway_kill(ctx: Context, full: bool) -> Row:
    """Goals call the model through gateway replicas behind one Service; a replica is SIGKILLed
    while it holds calls. The agents retry onto another; every call answered to an agent has exactly
    one spend row, and no goal spends past its budget."""
    goals_n, steps, kills = (10, 6, 3) if full else (5, 3, 1)
    started = time.monotonic()
    ns = ctx.namespace("gateway-kill")
    service, replicas = ctx.gateways(kills + 1)
    world = ctx.world(ns, ctx.operator(ns, env={"OVERSEER_GATEWAY_URL": service.url}))
    # The first answer takes 10 s and each other 3 s: the calls of agents that start seconds apart
    # (more on a loaded machine) are held by a replica at once.
    slow = [{**step(i), "delay": 10 if i == 1 else 3} for i in range(1, steps + 1)] + [{**text("Done."), "delay": 3}]
    conversations = {f"work-{g}": slow for g in range(goals_n)}
    model, runner = ctx.agents(world, conversations, max_goals=goals_n)
    goals = list(conversations)
    for name in goals:
        world.goal(name, retries=1, extra=f"  budget: {{maxCostPerGoal: {GOAL_BUDGET}}}")
    cut = 0
    with PodWatch(ctx, ns) as watch:
        for victim in range(kills):  # replicas die in turn; the last one serves to the end
            wait_for(lambda: service.in_flight[victim] >= 2, timeout=300, interval=0.02,
                     description=f"two calls in flight on gateway replica {victim + 1}")
            replicas[victim].proc.kill()
            replicas[victim].proc.wait(timeout=10)
            wait_for(lambda: service.in_flight[victim] == 0, timeout=10, interval=0.05,
                     description=f"the calls of replica {victim + 1} cut")
            cut += service.broken[victim]
        wait_ended(world, goals, timeout=300 if full else 180)
    row = tally(Row(f"model gateway SIGKILL x{kills}",
                    f"{len(goals)} goals through {kills + 1} gateway replicas behind one Service; a replica "
                    f"SIGKILLed with calls in flight, {kills} time{'s' if kills > 1 else ''}"), world, goals)
    uids = {g: world.get("goal", g)["metadata"]["uid"] for g in goals}
    answers = sum(answered_calls(model, goals).values())
    # A goal that finished was answered once per scripted turn (a call cut by a kill was asked again).
    got = {g: len(conversations[g]) for g in goals if world.phase(g) == "Succeeded"}
    rows = settle_spend(ctx, uids, got)
    missing = sum(max(0, n - rows[g][0]) for g, n in got.items())
    doubled = sum(max(0, rows[g][0] - n) for g, n in got.items())
    over = {g: round(rows[g][1], 4) for g in goals if rows[g][1] > GOAL_BUDGET}
    row.kb_rows_lost = missing + doubled
    row.lost += len(over) if row.lost == 0 else 0
    row.duplicate_pods = len(watch.duplicates)
    row.seconds = time.monotonic() - started
    row.notes = (f"calls cut by the kills {cut}, asked again on another replica; spend rows "
                 f"{sum(rows[g][0] for g in got)} for the {sum(got.values())} calls answered to the goals that "
                 f"finished (missing {missing}, doubled {doubled}); the model answered {answers} calls in all; "
                 f"goals over their ${GOAL_BUDGET} budget {len(over)}{' ' + str(over) if over else ''}, most spent "
                 f"${max(r[1] for r in rows.values()):.4f}; tracebacks in the surviving gateway "
                 f"{replicas[kills].log_text().count('Traceback')}")
    return row


# ---- PostgreSQL down ---------------------------------------------------------------------------


def postgres_outage(ctx: Context, full: bool) -> Row:
    """Goals checkpoint, record an approval and their experiences while PostgreSQL is stopped, and
    call the model through the gateway, whose spend ledger is in the same PostgreSQL (rows queue in
    its memory meanwhile); once it is back every row they wrote must be there, once."""
    outage = 60 if full else 15
    goals_n = 6 if full else 3
    started = time.monotonic()
    ns = ctx.namespace("postgres-outage")
    service, _ = ctx.gateways(1)
    world = ctx.world(ns, ctx.operator(ns, knowledge=True, env={"OVERSEER_GATEWAY_URL": service.url}))
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: deploy}
spec: {description: "Deploy", risk: high, command: {run: ["cat"]},
       inputSchema: {type: object, properties: {target: {type: string}}, required: [target]}}
""")
    world.wait_condition("capability", "deploy", "Ready", "True", timeout=60)
    steps = [step(i, seconds=1.0) for i in range(1, 7)]
    conversations = {f"work-{g}": [*steps, text("Done.")] for g in range(goals_n)}
    conversations["approved"] = [step(1), tool("deploy", target="prod"), step(2), text("Deployed.")]
    model, runner = ctx.agents(world, conversations, max_goals=len(conversations),
                               spec=WORKSPACE + "\n  capabilities: [deploy]")
    goals = list(conversations)
    for name in goals:
        world.goal(name, retries=2)
    with PodWatch(ctx, ns) as watch:
        wait_for(lambda: all((((world.get("goal", g) or {}).get("status") or {}).get("iteration") or 0) >= 1
                             for g in goals), timeout=240, description="every goal past its first call")
        ctx.postgres.stop()
        down_at, calls_before = time.monotonic(), len(model.requests())
        request = world.wait_phase("approved", "AwaitingApproval", timeout=60)["status"]["pendingApprovals"][0]
        world.kubectl("annotate", "goal", "approved", "-n", ns, f"overseer.dev/approve={request['id']}")
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        spent_during = len(model.requests()) - calls_before
        ctx.postgres.start()
        wait_ended(world, goals, timeout=240)
    row = tally(Row("PostgreSQL stopped", f"the knowledge base and the spend ledger down {outage} s while "
                    f"{len(goals)} goals ran (one approved during the outage)"), world, goals)
    uids = {g: world.get("goal", g)["metadata"]["uid"] for g in goals}
    ended = [g for g in goals if world.phase(g) in ENDED]
    with psycopg.connect(ctx.postgres.dsn) as db:
        experiences = {r[0] for r in db.execute("SELECT goal_uid FROM experiences WHERE namespace = %s", (ns,))}
        decisions = db.execute("SELECT count(*) FROM decisions WHERE goal_uid = %s", (uids["approved"],)).fetchone()[0]
        stored = dict(db.execute("SELECT goal_uid, count(*) FROM checkpoint_messages WHERE goal_uid = ANY(%s) "
                                 "GROUP BY goal_uid", (list(uids.values()),)).fetchall())
    lost_experiences = [g for g in ended if uids[g] not in experiences]
    # Each goal's conversation: the task, then a call and its result per step, then the answer.
    conversation = {g: 1 + 2 * (len(conversations[g]) - 1) + 1 for g in goals}
    lost_messages = sum(max(0, conversation[g] - stored.get(uids[g], 0)) for g in ended)
    # One spend row per model call a goal that finished was answered: one per scripted turn.
    calls = {g: len(conversations[g]) for g in goals if world.phase(g) == "Succeeded"}
    rows = settle_spend(ctx, uids, calls)
    lost_spend = sum(max(0, n - rows[g][0]) for g, n in calls.items())
    doubled_spend = sum(max(0, rows[g][0] - n) for g, n in calls.items())
    row.kb_rows_lost = len(lost_experiences) + (1 - min(decisions, 1)) + lost_messages + lost_spend + doubled_spend
    row.duplicate_pods = len(watch.duplicates)
    row.seconds = time.monotonic() - started
    row.notes = (f"experiences {len(ended) - len(lost_experiences)}/{len(ended)}, approval records {decisions}/1, "
                 f"checkpoint messages {sum(stored.values())}/{sum(conversation[g] for g in ended)}, "
                 f"spend rows {sum(rows[g][0] for g in calls)}/{sum(calls.values())} (doubled {doubled_spend}; "
                 f"{spent_during} model calls answered while PostgreSQL was down)")
    return row


# ---- PostgreSQL's disk full ----------------------------------------------------------------------

KB_TABLES = ("checkpoints", "checkpoint_messages", "experiences", "decisions", "gateway_spend")


def _fill_tablespace(dsn: str, folder: Path) -> int:
    """Move the written tables onto a tablespace on `folder` (a small disk) and fill it with a table
    of its own until PostgreSQL refuses (disk_full); returns the bytes the filler took."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLESPACE small LOCATION '{folder}'")
        for table in KB_TABLES:
            db.execute(f"ALTER TABLE {table} SET TABLESPACE small")
        db.execute("CREATE TABLE filler (x text) TABLESPACE small")
        db.execute("ALTER TABLE filler ALTER COLUMN x SET STORAGE PLAIN")  # in its pages, not compressed
        while True:  # 50 rows of about 2 KB a statement
            try:
                db.execute("INSERT INTO filler SELECT (SELECT string_agg(md5(random()::text || n || r), '') "
                           "FROM generate_series(1, 60) n) FROM generate_series(1, 50) r")
            except psycopg.errors.DiskFull:
                break
        # The ledger's last page has room for the rows of minutes: fill it too (rows of no goal), so the
        # gateway's next row needs a page the disk cannot give.
        while True:
            try:
                db.execute("INSERT INTO gateway_spend (request_id, namespace, agent, goal, goal_uid, pod, model, "
                           "input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, "
                           "cache_write_1h_tokens, cost_usd) SELECT 'filler-' || gen_random_uuid(), 'filler', '', "
                           "'', 'filler', '', '', 0, 0, 0, 0, 0, 0 FROM generate_series(1, 10)")
            except psycopg.errors.DiskFull:
                break
        found = db.execute("SELECT pg_total_relation_size('filler')").fetchone()
    return int(found[0]) if found else 0


def _intact(dsn: str) -> list[str]:
    """The written tables' B-tree indexes that amcheck finds broken (with what it says, the heap checked
    against each), and tables that cannot be read through."""
    broken = []
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        for table in KB_TABLES:
            for (index,) in db.execute(
                    "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = %s::regclass AND a.amname = 'btree'",
                    (table,)).fetchall():
                try:
                    db.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
                except psycopg.Error as e:
                    broken.append(f"{index}: {str(e).strip()[:120]}")
            try:
                db.execute(f"SELECT count(*) FROM {table}")
            except psycopg.Error as e:
                broken.append(f"{table}: {str(e).strip()[:120]}")
    return broken


def postgres_disk_full(ctx: Context, full: bool) -> Row:
    """PostgreSQL's disk fills while goals write checkpoints, experiences and spend rows: the tables
    they write are moved onto a tablespace on a small tmpfs, which a filler table then fills until
    PostgreSQL answers disk_full. Writes fail, reads work; after the filler is dropped every queued
    row must be there once, and amcheck must find the indexes whole."""
    held = 60 if full else 15
    goals_n = 4 if full else 2
    started = time.monotonic()
    ns = ctx.namespace("postgres-disk-full")
    service, _ = ctx.gateways(1)
    world = ctx.world(ns, ctx.operator(ns, knowledge=True, env={"OVERSEER_GATEWAY_URL": service.url}))
    steps = [step(i, seconds=1.0) for i in range(1, 9)]
    conversations = {f"work-{g}": [*steps, text("Done.")] for g in range(goals_n)}
    model, runner = ctx.agents(world, conversations, max_goals=goals_n, spec=WORKSPACE)
    goals = list(conversations)
    for name in goals:
        world.goal(name, retries=1)
    disk = ctx.workdir / "pg-small"
    with PodWatch(ctx, ns) as watch:
        wait_for(lambda: all((((world.get("goal", g) or {}).get("status") or {}).get("iteration") or 0) >= 1
                             for g in goals), timeout=240, description="every goal past its first call")
        settle_spend(ctx, {g: world.get("goal", g)["metadata"]["uid"] for g in goals}, {g: 1 for g in goals})
        with small_disk(disk, "4m"):
            subprocess.run(["chown", "postgres:postgres", str(disk)], check=True)
            disk.chmod(0o700)
            filled = _fill_tablespace(ctx.postgres.dsn, disk)
            calls_before = len(model.requests())
            full_at = time.monotonic()
            shown = _watch_disk_full(world, goals, until=full_at + held, record=ctx.workdir / "disk-full-shown.txt")
            spent_during = len(model.requests()) - calls_before
            refused = _log_lines(ctx, "No space left on device")
            with psycopg.connect(ctx.postgres.dsn, autocommit=True) as db:
                db.execute("DROP TABLE filler")
                db.execute("DELETE FROM gateway_spend WHERE namespace = 'filler'")
            cleared = _watch_cleared(world, goals, freed_at=time.monotonic())
            wait_ended(world, goals, timeout=240)
            uids = {g: world.get("goal", g)["metadata"]["uid"] for g in goals}
            calls = {g: len(conversations[g]) for g in goals if world.phase(g) == "Succeeded"}
            rows = settle_spend(ctx, uids, calls)
            with psycopg.connect(ctx.postgres.dsn, autocommit=True) as db:
                experiences = {r[0] for r in db.execute("SELECT goal_uid FROM experiences WHERE namespace = %s",
                                                        (ns,))}
                stored = dict(db.execute("SELECT goal_uid, count(*) FROM checkpoint_messages "
                                         "WHERE goal_uid = ANY(%s) GROUP BY goal_uid", (list(uids.values()),)))
                for table in KB_TABLES:  # back off the small disk before it goes
                    db.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
                db.execute("DROP TABLESPACE small")
            broken = _intact(ctx.postgres.dsn)
    row = tally(Row("PostgreSQL's disk full", f"the tables goals write moved onto a 4 MiB disk, filled until "
                    f"PostgreSQL answered disk_full, for {held} s while {len(goals)} goals ran; then space "
                    "freed"), world, goals)
    ended = [g for g in goals if world.phase(g) in ENDED]
    conversation = {g: 1 + 2 * (len(conversations[g]) - 1) + 1 for g in goals}
    lost_experiences = [g for g in ended if uids[g] not in experiences]
    lost_messages = sum(max(0, conversation[g] - stored.get(uids[g], 0)) for g in ended)
    lost_spend = sum(max(0, n - rows[g][0]) for g, n in calls.items())
    doubled_spend = sum(max(0, rows[g][0] - n) for g, n in calls.items())
    row.kb_rows_lost = len(lost_experiences) + lost_messages + lost_spend + doubled_spend + len(broken)
    row.duplicate_pods = len(watch.duplicates)
    row.seconds = time.monotonic() - started
    row.notes = (f"filler {filled // 1024} KiB; {spent_during} model calls answered while the disk was full; "
                 f"log lines naming the full disk: {refused}; experiences {len(ended) - len(lost_experiences)}/"
                 f"{len(ended)}, checkpoint messages {sum(stored.values())}/{sum(conversation[g] for g in ended)}, "
                 f"spend rows {sum(rows[g][0] for g in calls)}/{sum(calls.values())} (doubled {doubled_spend}); "
                 f"amcheck: {'; '.join(broken) if broken else 'indexes whole'}; shown while full: {shown}; "
                 f"once space was freed: {cleared}")
    return row


def _reasons(world: World) -> dict[str, set[str]]:
    """Event reason -> the objects (kind/name) of the namespace that have one."""
    found: dict[str, set[str]] = {}
    for e in world.items("events"):
        found.setdefault(e["reason"], set()).add(f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}")
    return found


def _watch_disk_full(world: World, goals: list[str], until: float, record: Path) -> str:
    """Until `until`, watch for what a person sees of the full disk: the Agent's KnowledgeBase condition
    (DiskFull), the goals' status.knowledgeBacklog and the Events of agents, gateway and operator (their
    messages go to `record`)."""
    started, condition_at, backlog_at = time.monotonic(), None, None
    message = ""
    while time.monotonic() < until:
        kb = world.condition("agent", "coder", "KnowledgeBase") or {}
        if condition_at is None and kb.get("status") == "False" and kb.get("reason") == "DiskFull":
            condition_at, message = time.monotonic() - started, kb.get("message", "")
        if backlog_at is None and any(((world.get("goal", g) or {}).get("status") or {}).get(
                "knowledgeBacklog", {}).get("reason") == "DiskFull" for g in goals):
            backlog_at = time.monotonic() - started
        time.sleep(max(0.0, min(2.0, until - time.monotonic())))
    events = _reasons(world)
    record.write_text(f"Agent KnowledgeBase: {message}\n" + "".join(
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']} {e['type']} {e['reason']}: {e['message']}\n"
        for e in world.items("events") if "KnowledgeBase" in e["reason"] or "SpendLedger" in e["reason"]
        or e["reason"] == "DiskFull"))
    named = "free space" in message.lower() and "writes" in message
    return (f"Agent KnowledgeBase=False DiskFull {'after %.0f s' % condition_at if condition_at is not None else 'never'}"
            f"{' (names the writes and the fix)' if named else ''}, goal status.knowledgeBacklog DiskFull "
            f"{'after %.0f s' % backlog_at if backlog_at is not None else 'never'}, Events KnowledgeBaseDiskFull on "
            f"{len(events.get('KnowledgeBaseDiskFull', ()))} goals, SpendLedgerDiskFull on "
            f"{len(events.get('SpendLedgerDiskFull', ()))} goals, DiskFull on the Agent "
            f"{len(events.get('DiskFull', ()))}")


def _watch_cleared(world: World, goals: list[str], freed_at: float, timeout: float = 90) -> str:
    """After space was freed: how long until the Agent's KnowledgeBase condition is True again and no goal
    reports waiting writes, and the Events saying the writes went through."""
    def clear() -> bool:
        kb = world.condition("agent", "coder", "KnowledgeBase") or {}
        if kb.get("status") != "True" or any(
                ((world.get("goal", g) or {}).get("status") or {}).get("knowledgeBacklog") for g in goals):
            return False
        # the gateway says its rows are in on its own timer, after the agents have said theirs are
        events = _reasons(world)
        return set(events.get("SpendLedgerWritten", ())) >= set(events.get("SpendLedgerDiskFull", ()))
    try:
        wait_for(clear, timeout=timeout, interval=1, description="the KnowledgeBase condition clear again")
        after = f"after {time.monotonic() - freed_at:.0f} s"
    except AssertionError:
        after = f"not within {timeout} s"
    events = _reasons(world)
    return (f"Agent KnowledgeBase=True and no goal's knowledgeBacklog {after}, Events KnowledgeBaseWritesStored on "
            f"{len(events.get('KnowledgeBaseWritesStored', ()))} goals, SpendLedgerWritten on "
            f"{len(events.get('SpendLedgerWritten', ()))} goals, KnowledgeBaseReady on the Agent "
            f"{len(events.get('KnowledgeBaseReady', ()))}")


def _log_lines(ctx: Context, needle: str) -> str:
    """How many lines of the agents', the gateways' and the operators' logs hold needle, per kind."""
    kinds = {"agents": "agents-*/agent-*.log", "gateway": "gateway-*.log", "operator": "operator-*.log"}
    counts = {kind: sum(f.read_text(errors="replace").count(needle) for f in ctx.workdir.glob(pattern))
              for kind, pattern in kinds.items()}
    return ", ".join(f"{kind} {n}" for kind, n in counts.items())


# ---- Redis down --------------------------------------------------------------------------------


def redis_outage(ctx: Context, full: bool) -> Row:
    """Goals run while Redis (rate limits, live events, steering) is stopped: they go on, and the
    event stream carries their events again once it is back.

    Redis here keeps nothing across a restart (as a cache-only Redis in a cluster), so a goal that
    had already ended when it stopped has lost its stream with it; only the goals still several
    calls from their end at the stop are counted (on a loaded machine agents start far apart)."""
    outage = 30 if full else 10
    started = time.monotonic()
    ns = ctx.namespace("redis-outage")
    world = ctx.world(ns, ctx.operator(ns, redis=True))
    steps = [step(i, seconds=1.0) for i in range(1, 13)]
    conversations = {f"work-{g}": [*steps, text("Done.")] for g in range(3)}
    model, runner = ctx.agents(world, conversations, max_goals=3)
    goals = list(conversations)
    for name in goals:
        world.goal(name, retries=1)

    def status(g: str) -> dict[str, Any]:
        return (world.get("goal", g) or {}).get("status") or {}

    with PodWatch(ctx, ns) as watch:
        wait_for(lambda: all((status(g).get("iteration") or 0) >= 1 for g in goals),
                 timeout=240, description="every goal past its first call")
        ctx.redis.stop()
        # a margin of calls, since the status trails the agent by a write
        running = [g for g in goals if status(g).get("phase") not in ("Succeeded", "Failed", "Cancelled")
                   and (status(g).get("iteration") or 0) <= len(steps) - 4]
        time.sleep(outage)
        iteration_at_return = {g: status(g).get("iteration") or 0 for g in goals}
        ctx.redis.start()
        wait_ended(world, goals, timeout=180)
    row = tally(Row("Redis stopped", f"Redis down {outage} s while {len(goals)} goals ran"), world, goals)
    r = redis.Redis.from_url(ctx.redis.url)
    try:
        streams = {g: r.xrange(goal_key(ns, g, "events")) for g in running}
    finally:
        r.close()
    resumed = [g for g, entries in streams.items() if any(b"end" in fields.values() for _, fields in entries)]
    moved = [g for g in goals if iteration_at_return[g] > 1]
    row.duplicate_pods = len(watch.duplicates)
    row.seconds = time.monotonic() - started
    row.notes = (f"goals that went on during the outage {len(moved)}/{len(goals)}; event streams carrying "
                 f"the goal's end after Redis returned {len(resumed)}/{len(running)} (the goals with calls "
                 "left when Redis stopped)")
    row.lost += len(running) - len(resumed) if row.lost == 0 else 0
    if not running:
        row.notes += "; no goal had calls left when Redis stopped: the stream was not tried"
    return row


# ---- a full disk -------------------------------------------------------------------------------


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted on folder (needs root): a disk that fills up."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def disk_full(ctx: Context, full: bool) -> Row:
    """A goal whose workspace (a 2 MiB disk) fills up: the tool call fails and the model is told, and
    a checkpoint that cannot be written fails the goal WorkspaceFull (the agent's reason, with the
    workspace and the bytes free), never a corrupt checkpoint."""
    started = time.monotonic()
    ns = ctx.namespace("disk-full")
    world = ctx.world(ns, ctx.operator(ns))
    conversations = {
        # the tool fails with ENOSPC; the model reads it and finishes
        "fills-by-tool": [tool("bash", command="head -c 8000000 /dev/zero > big.bin; rm -f big.bin"), text("The disk is full.")],
        # the disk is filled to the last byte before a checkpoint: the save itself fails
        "fills-checkpoint": [tool("bash", command="head -c 8000000 /dev/zero > big.bin; echo filled"),
                             tool("bash", command="echo " + "x" * 2000), text("Done.")],
    }
    model, runner = ctx.agents(world, conversations, max_goals=2, spec=WORKSPACE)
    goals = list(conversations)
    with small_disk(runner.claim_folder(claim_name("fills-by-tool")), "2m"), \
            small_disk(runner.claim_folder(claim_name("fills-checkpoint")), "2m"):
        for name in goals:
            world.goal(name, retries=1)
        with PodWatch(ctx, ns) as watch:
            wait_ended(world, goals, timeout=120)
        row = tally(Row("disk full", "goal workspaces on a 2 MiB disk filled by a tool call"), world, goals)
        unreadable = []
        for name in goals:
            uid = world.get("goal", name)["metadata"]["uid"]
            folder = runner.claim_folder(claim_name(name)) / ".overseer" / "checkpoints" / uid
            if (folder / "state.json").exists() and not _checkpoint_readable(folder):
                unreadable.append(name)
    messages = {g: ((world.get("goal", g) or {}).get("status") or {}).get("message", "")[:240] for g in goals}
    row.duplicate_pods = len(watch.duplicates)
    row.kb_rows_lost = len(unreadable)
    row.seconds = time.monotonic() - started
    row.notes = f"unreadable checkpoints {len(unreadable)}; " + "; ".join(f"{g}: {m}" for g, m in messages.items())
    return row


SCENARIOS: dict[str, Callable[[Context, bool], Row]] = {
    "agent-kills": agent_kills,
    "model-faults": model_faults,
    "gateway-kill": gateway_kill,
    "postgres-outage": postgres_outage,
    "postgres-disk-full": postgres_disk_full,
    "redis-outage": redis_outage,
    "disk-full": disk_full,
}
