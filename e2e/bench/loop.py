"""The agent loop benchmark: what the loop adds per iteration, checkpoint writes, prompt caching
and compaction, with the scripted model behind the real `anthropic` SDK.

    python -m e2e.bench.loop [--iterations 300] [--repeat 3] [--goals 50] [--docs docs/performance.md]
                             [--quick] [--no-cluster] [--keep-cluster] [--json PATH]

Everything runs in this process except the services, which are real and on 127.0.0.1:
PostgreSQL and Redis (started here in throwaway folders, as tests/support/servers.py
does; PostgreSQL with fsync and synchronous commit on) and the local control plane of
e2e/cluster/up.sh (started if needed, stopped again if this run started it).

1. Loop overhead per iteration. A zero-latency scripted model (Scenario.tool_loop) calls a
   no-op tool `iterations` times. Per iteration, the loop's own time is the gap from one model
   answer arriving (client.messages.create returns) to the next request leaving, so the
   model's round trip (SDK, HTTP, scripted server) is left out. Cross-check: the same requests
   are replayed as bare SDK calls to a fresh server, and (loop wall time - replay wall time) /
   iterations is the mean the loop adds. Three set-ups:
   (a) file checkpoints in a workspace folder, a no-op Goal link, no events;
   (b) as a goal pod runs: checkpoints in PostgreSQL (KnowledgeBase.for_goal), status writes
       with server-side apply to a Goal on a real API server (GoalLink, watching its Goal and
       heartbeating), events through Redis (EventStream) and steering polled from it
       (SteeringPoller). The tool has no side effects, like a file read: one save a round;
   (c) as (b), but the tool declares side effects, like a shell command that writes: the
       model's answer is saved before the call runs, so two saves a round.
2. Checkpoint writes with 10, 100 and 200 turns of history already stored, for PostgreSQL and
   the file fallback: per goal, the three saves the loop makes for a round of calls with side
   effects (the model's answer, a finished call, the round's results).
3. Prompt cache: scripted goals of 30 and 50 turns with a system prompt of about 3000 tokens,
   the built-in tools and file reads of a few hundred tokens each; the share of prompt tokens
   read from cache, cache_read / (input + cache_read + cache_creation), as the scripted server
   counts them (like the API: breakpoints, 20-block lookback, minimum cacheable length). A
   third and fourth goal make 8 and 9 parallel tool calls a turn. Requests that read less than the whole
   previous prompt are listed with their cause.
4. Compaction: a long goal with a small context window (`context_tokens`), so that
   AgentLoop._maybe_compact runs; prompt tokens before and after each compaction and tokens
   per goal, against the same goal without compaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anthropic

from e2e.bench.docs import write_section
from e2e import harness
from overseer import live
from overseer.agent.checkpoint_file import FileCheckpoints
from overseer.agent.goal_link import GoalLink
from overseer.agent.knowledge import KnowledgeBase
from overseer.agent.loop import AgentLoop, Budget, LoopConfig
from overseer.agent.main import GUIDANCE
from overseer.testing.scripted_model import (
    LOOKBACK_BLOCKS,
    Scenario,
    ScriptedModelServer,
    minimum_cacheable_tokens,
    prompt_blocks,
)
from overseer.agent.tools import default_registry
from overseer.agent.tools.base import Tool, ToolContext, ToolRegistry, ToolResult
from overseer.agent.tools.todo import TodoList
from overseer.kube import Kube, load_credentials
from overseer.operator.knowledge_tenants import provision_login
from tests.support.servers import PostgresServer, RedisServer, pg_bin, wait_port

MODEL = "claude-sonnet-5-5"
NAMESPACE = "bench-loop"
GOAL_NAME = "loop-overhead"
TASK = "Make tests/test_parser.py pass without changing the tests."
TARGET_OVERHEAD_MS = 10.0
TARGET_CHECKPOINT_P95_MS = 10.0
TARGET_CACHE_SHARE = 0.85
COMPACTION_ASK = "Context is running out."
WARMUP = 5  # first iterations of each run left out (connections are opened lazily)
SECTIONS = {
    "loop": ("Agent loop", "<!-- loop:begin (written by python -m e2e.bench.loop --docs) -->", "<!-- loop:end -->"),
    "cache": ("Prompt cache", "<!-- cache:begin (written by python -m e2e.bench.loop --docs) -->",
              "<!-- cache:end -->"),
}
# Prices relative to uncached input (Claude Sonnet): cache read 0.1, 5-minute cache write 1.25, output 5.
PRICE = {"input": 1.0, "cache_read": 0.1, "cache_write": 1.25, "output": 5.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- measuring -----------------------------------------------------------------------------------

@dataclass
class Call:
    start: float
    end: float
    compaction: bool
    input: int
    cache_read: int
    cache_write: int
    output: int
    cpu_start: float = 0.0                # this process's CPU time (time.process_time) at start and end
    cpu_end: float = 0.0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write


class _TimedMessages:
    def __init__(self, inner: Any, compact_key: str | None) -> None:
        self.inner = inner
        self.compact_key = compact_key
        self.calls: list[Call] = []

    async def create(self, **request: Any) -> Any:
        compaction = is_compaction(request)
        if compaction and self.compact_key:
            # The scripted model answers a summary request from a conversation of its own.
            request = {**request, "metadata": {"user_id": self.compact_key}}
        cpu_start, start = time.process_time(), time.perf_counter()
        response = await self.inner.create(**request)
        end, cpu_end = time.perf_counter(), time.process_time()
        u = response.usage
        self.calls.append(Call(start, end, compaction, u.input_tokens or 0, u.cache_read_input_tokens or 0,
                               u.cache_creation_input_tokens or 0, u.output_tokens or 0, cpu_start, cpu_end))
        return response


def is_compaction(request: Mapping[str, Any]) -> bool:
    """Whether a request is AgentLoop._maybe_compact's summary request (its last user turn asks for it)."""
    last = (request.get("messages") or [{}])[-1]
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, Mapping) and COMPACTION_ASK in str(b.get("text", "")) for b in content)


class TimedClient:
    """What the loop uses of AsyncAnthropic (messages.create), timed around each call."""

    def __init__(self, client: anthropic.AsyncAnthropic, compact_key: str | None = None) -> None:
        self.messages = _TimedMessages(client.messages, compact_key)

    @property
    def calls(self) -> list[Call]:
        return self.messages.calls


class Spans:
    """Time spent in each collaborator of the loop: (part, start, seconds)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, float]] = []

    def wrap(self, part: str, fn: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.items.append((part, start, time.perf_counter() - start))
        return timed


class TimedCheckpoints:
    def __init__(self, inner: Any, spans: Spans) -> None:
        self.load = spans.wrap("checkpoint", inner.load)
        self.save = spans.wrap("checkpoint", inner.save)
        self.replace = spans.wrap("checkpoint", inner.replace)


class TimedLink:
    def __init__(self, inner: Any, spans: Spans) -> None:
        self.inner = inner
        self.report = spans.wrap("status", inner.report)

    @property
    def cancelled(self) -> bool:
        return self.inner.cancelled

    @property
    def annotations(self) -> dict[str, str]:
        return self.inner.annotations

    @property
    def goal(self) -> dict[str, Any]:
        return self.inner.goal

    def decision(self, approval_id: str) -> tuple[str, str] | None:
        return self.inner.decision(approval_id)

    async def wait_until(self, predicate: Any, timeout: float | None = None) -> Any:
        return await self.inner.wait_until(predicate, timeout)


class NullLink:
    """A Goal link that writes nothing: never cancelled, no annotations."""

    cancelled = False
    annotations: dict[str, str] = {}
    goal: dict[str, Any] = {}

    def decision(self, approval_id: str) -> None:
        return None

    async def wait_until(self, predicate: Any, timeout: float | None = None) -> Any:
        return predicate()

    async def report(self, **fields: Any) -> None:
        return None


class Noop(Tool):
    """Does no work; returns a fixed result of `size` characters (a typical tool result)."""

    name = "noop"
    description = "Does nothing; stands in for a tool whose own cost is not measured here."
    input_schema = {"type": "object"}

    def __init__(self, size: int = 400) -> None:
        line = "noop: nothing to do, nothing done; this line stands for tool output.\n"
        self.text = (line * (size // len(line) + 1))[:size]

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(self.text, summary="noop")


def cpu_sample() -> tuple[float, float, float]:
    """(monotonic time, CPU seconds the whole machine was busy, CPU seconds of this process)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def cores_busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float]:
    """CPU cores in use between two samples: the whole machine, this process."""
    wall = max(after[0] - before[0], 1e-9)
    return (after[1] - before[1]) / wall, (after[2] - before[2]) / wall


def wait_quiet(limit: float, threshold: float = 0.5) -> float:
    """Wait up to `limit` seconds until other processes use under `threshold` cores; their load at the end."""
    deadline = time.monotonic() + limit
    while True:
        a = cpu_sample()
        time.sleep(2.0)
        machine, own = cores_busy(a, cpu_sample())
        if machine - own < threshold or time.monotonic() >= deadline:
            return machine - own


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "median": statistics.median(ms), "p95": pct(ms, 95), "max": max(ms),
            "mean": statistics.fmean(ms)}


# ---- services ------------------------------------------------------------------------------------

class DurablePostgres(PostgresServer):
    """The test server of tests/integration, but with fsync and synchronous commit on, as in production."""

    def start(self) -> None:
        opts = f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1"
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-l", str(self.dir / "server.log"),
                  "-w", "start")
        wait_port(self.port)


@dataclass
class Services:
    pg_dsn: str
    redis_url: str
    kube: Kube | None = None          # the cluster's API server, when there is one
    workdir: Path = Path(".")


async def open_goal(kube: Kube, name: str) -> GoalLink:
    """A Goal in NAMESPACE, created afresh, and its link."""
    url = f"/apis/overseer.dev/v1alpha1/namespaces/{NAMESPACE}/goals"
    if await kube.get(f"{url}/{name}") is not None:
        await kube.request("DELETE", f"{url}/{name}")
        for _ in range(100):
            if await kube.get(f"{url}/{name}") is None:
                break
            await asyncio.sleep(0.05)
    await kube.request("POST", url, body={
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "metadata": {"name": name},
        "spec": {"description": TASK, "agentRef": {"name": "coder"}}})
    link = GoalLink(kube, NAMESPACE, name)
    await link.load()
    return link


# ---- 1. loop overhead ------------------------------------------------------------------------------

@dataclass
class OverheadRun:
    variant: str
    iterations: int
    success: bool
    gaps_s: list[float]
    cpu_s: list[float]                    # this process's CPU time in each gap
    rtt_s: list[float]
    parts_ms: dict[str, float]            # median per iteration of each collaborator
    wall_s: float
    replay_wall_s: float
    machine_cores: float = 0.0            # CPU cores busy on the whole machine during the run
    own_cores: float = 0.0                # ... of which this process

    @property
    def mean_added_ms(self) -> float:
        return 1000 * (self.wall_s - self.replay_wall_s) / self.iterations


async def overhead_run(variant: str, iterations: int, services: Services, run_no: int) -> OverheadRun:
    scenario = Scenario.tool_loop(turns=iterations + 1, tool="noop", input={"path": "src/parser.py"})
    spans = Spans()
    uid = f"overhead-{variant}-{run_no}-{os.getpid()}"
    kb: KnowledgeBase | None = None
    link_inner: Any = NullLink()
    publish = steering = None
    redis = None
    poller: live.SteeringPoller | None = None
    todos = TodoList()
    tool = Noop()
    tool.side_effects = variant == "c"  # otherwise like a file read
    tool.run = spans.wrap("tool", tool.run)  # type: ignore[method-assign]
    config = LoopConfig(model=MODEL, max_tokens=8192, system=realistic_system_prompt(), goal_key=f"{NAMESPACE}/{uid}")
    checkpoints: Any = None
    try:
        if variant == "a":
            checkpoints = FileCheckpoints(services.workdir / f"ws-{uid}", uid)
        else:
            kb = KnowledgeBase(services.pg_dsn, namespace=NAMESPACE)
            await kb.open()
            checkpoints = kb.for_goal(uid, resume_wait=5)
            redis = live.connect(services.redis_url)
            events = live.EventStream(redis, NAMESPACE, uid)
            poller = live.SteeringPoller(live.SteeringQueue(redis, NAMESPACE, uid))
            poller.start()

            async def publish_event(kind: str, data: dict[str, Any]) -> None:
                await events.publish({"type": kind, "data": data})

            publish, steering = spans.wrap("events", publish_event), spans.wrap("steering", poller.take)
            if services.kube is not None:
                link_inner = await open_goal(services.kube, f"{GOAL_NAME}-{run_no}")
                link_inner.start()
        async with ScriptedModelServer(scenario) as server:
            async with anthropic.AsyncAnthropic(base_url=server.url, api_key="bench", max_retries=0) as sdk:
                client = TimedClient(sdk)
                loop = AgentLoop(client, config, ToolRegistry([tool]), ToolContext(workspace=services.workdir),
                                 TimedLink(link_inner, spans), TimedCheckpoints(checkpoints, spans), Budget(), todos,
                                 publish=publish, steering=steering)
                sample = cpu_sample()
                started = time.perf_counter()
                outcome = await loop.run(TASK)
                wall = time.perf_counter() - started
                machine_cores, own_cores = cores_busy(sample, cpu_sample())
                await loop.flush_events()
            bodies = [r.body for r in server.requests if r.path == "/v1/messages"]
        # The same requests as bare SDK calls, to a fresh server playing the same script.
        async with ScriptedModelServer(scenario) as server:
            async with anthropic.AsyncAnthropic(base_url=server.url, api_key="bench", max_retries=0) as sdk:
                started = time.perf_counter()
                for body in bodies:
                    await sdk.messages.create(**body)
                replay = time.perf_counter() - started
    finally:
        if isinstance(link_inner, GoalLink):
            await link_inner.stop()
        if poller is not None:
            await poller.stop()
        if kb is not None:
            await kb.close()
        if redis is not None:
            await redis.aclose()
    calls = client.calls
    gaps, per_part = [], {}
    for i in range(WARMUP, len(calls) - 1):
        lo, hi = calls[i].end, calls[i + 1].start
        gaps.append(hi - lo)
        for part, start, seconds in spans.items:
            if lo <= start < hi:
                per_part.setdefault(part, [0.0] * (len(calls) - 1 - WARMUP))[i - WARMUP] += seconds
    parts = {p: 1000 * statistics.median(v) for p, v in per_part.items()}
    # Events are published by a background task: their time overlaps the rest, so it is not
    # subtracted from the gap.
    parts["loop itself"] = 1000 * statistics.median(
        [g - sum(v[k] for p, v in per_part.items() if p != "events") for k, g in enumerate(gaps)])
    cpu = [calls[i + 1].cpu_start - calls[i].cpu_end for i in range(WARMUP, len(calls) - 1)]
    return OverheadRun(variant, iterations, outcome.success, gaps, cpu, [c.end - c.start for c in calls[WARMUP:]],
                       parts, wall, replay, machine_cores, own_cores)


# ---- 2. checkpoint writes --------------------------------------------------------------------------

def turn_messages(i: int, result_chars: int = 1600) -> list[dict[str, Any]]:
    """One iteration's messages, shaped as the loop stores them."""
    body = "\n".join(f"{n:>6}\tdef parse_{i}_{n}(text):  # splits on tabs and commas" for n in range(1, 40))
    return [
        {"role": "assistant", "content": [
            {"type": "text", "text": f"Step {i}: the parser drops the last field when a line ends in a tab; "
                                     f"reading the next module to see where the fields are split."},
            {"type": "tool_use", "id": f"toolu_01bench{i:08d}", "name": "read_file",
             "input": {"path": f"src/module_{i % 40:02d}.py"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_01bench{i:08d}", "content": body[:result_chars],
             "is_error": False},
            {"type": "text", "text": "TODO list (1/4 done):\n1. [x] reproduce\n2. [~] find the split\n"
                                     "3. [ ] fix it\n4. [ ] run the tests"}]},
    ]


def counters(i: int, partial: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"iteration": i, "input": 1200 * i, "output": 90 * i, "cache_read": 40_000 * i, "cache_write": 900 * i,
            "seconds": 4.2 * i, "tool_calls": i, "steer_seen": "", "partial": partial or []}


async def checkpoint_samples(store: Any, history: int) -> list[float]:
    """Prefill `history` turns (untimed), then time the three saves of a round of calls with side effects."""
    task = {"role": "user", "content": [{"type": "text", "text": TASK}]}
    todos = {"items": [{"text": "reproduce", "status": "done"}, {"text": "find the split", "status": "in_progress"}]}
    await store.save(history, [task, *[m for i in range(history) for m in turn_messages(i)]], todos, counters(history))
    answer, results = turn_messages(history)
    out = []
    for new, state in (([answer], counters(history + 1)),
                       ([], counters(history + 1, results["content"][:1])),
                       ([results], counters(history + 1))):
        start = time.perf_counter()
        await store.save(history + 1, new, todos, state)
        out.append(time.perf_counter() - start)
    return out


async def checkpoint_bench(services: Services, histories: list[int], goals: int) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {"PostgreSQL": {}, "file": {}}
    async with KnowledgeBase(services.pg_dsn, namespace=NAMESPACE) as kb:
        for h in histories:
            samples: list[float] = []
            for g in range(goals):
                samples += await checkpoint_samples(kb.for_goal(f"ckpt-{h}-{g}-{os.getpid()}"), h)
            out["PostgreSQL"][h] = samples
        load_start = time.perf_counter()
        loaded = await kb.load_checkpoint(f"ckpt-{max(histories)}-0-{os.getpid()}")
        out["PostgreSQL load"] = {max(histories): [time.perf_counter() - load_start]}
        assert loaded is not None and len(loaded.messages) == 1 + 2 * (max(histories) + 1)
    for h in histories:
        samples = []
        for g in range(goals):
            samples += await checkpoint_samples(FileCheckpoints(services.workdir / "ckpt", f"{h}-{g}"), h)
        out["file"][h] = samples
    return out


# ---- 3. and 4. realistic goals: the prompt cache and compaction -----------------------------------

def realistic_system_prompt() -> str:
    """About 3000 tokens, as an Agent's role, its system prompt, the guidance and a few lessons make."""
    rules = [
        "Read the failing test and the code it exercises before changing anything.",
        "Prefer the smallest change that makes the behaviour correct; do not refactor on the way.",
        "Keep the public interface of modules stable; callers elsewhere in the repository depend on it.",
        "Run the narrowest test first (pytest path::name), then the whole suite before you finish.",
        "When a command fails, read its whole output; the first error is usually the real one.",
        "Never change tests to make them pass unless the goal says the test is wrong.",
        "Write commit-ready code: type hints, no debug prints, no commented-out code.",
        "Explain in your final report what was wrong, what you changed and how you verified it.",
        "Use the todo tool to keep a plan for anything longer than two steps, and keep it current.",
        "If the task is ambiguous, choose the interpretation the tests support and say so.",
    ]
    conventions = "\n".join(f"- {rule} ({area} code follows the same rule.)"
                            for area in ("Parser", "Lexer", "CLI", "Storage", "Network", "Report", "Config",
                                         "Scheduler", "Cache", "Plugin")
                            for rule in rules)
    lessons = "\n".join(f"- In goals about {topic}, the cause was in {place}; checking it first saved time."
                        for topic, place in (("parsing", "the tokenizer's handling of tabs"),
                                             ("timeouts", "the retry wrapper, not the client"),
                                             ("flaky tests", "shared temporary folders between tests"),
                                             ("encoding", "files opened without encoding='utf-8'")))
    return (f"You are: Senior Python engineer on the data-ingest team.\n\nTeam conventions:\n{conventions}\n\n"
            f"{GUIDANCE}\n\nLessons from earlier goals (use what applies):\n{lessons}")


def make_workspace(root: Path, modules: int = 40) -> Path:
    """A repository of `modules` Python files of about 45 lines (a read is 400-500 tokens)."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    for m in range(modules):
        lines = [f'"""Module {m}: field splitting for record type {m}."""', "", "import re", ""]
        for f in range(8):
            lines += [f"def parse_{m}_{f}(line: str) -> list[str]:",
                      "    fields = re.split(r'[\\t,]', line.rstrip('\\n'))",
                      f"    return [x.strip() for x in fields if x or {f} % 2]", "",
                      f"SEPARATOR_{f} = {m * 8 + f!r}", ""]
        (src / f"module_{m:02d}.py").write_text("\n".join(lines) + "\n")
    return root


def realistic_turns(turns: int, width: int = 1) -> list[dict[str, Any]]:
    """A goal of `turns` model answers: plan, read (and grep) modules `width` at a time, update
    the plan now and then, report."""
    items = ["reproduce the failure", "find where fields are split", "fix the split", "run the whole suite"]

    def plan(done: int) -> dict[str, Any]:
        return {"tool_use": {"name": "todo", "input": {"items": [
            {"text": t, "status": "done" if k < done else "in_progress" if k == done else "pending"}
            for k, t in enumerate(items)]}}}

    out: list[dict[str, Any]] = [{"reply": [{"text": "I'll plan the work first, then read the parser modules."},
                                            plan(0)]}]
    for i in range(1, turns - 1):
        text = (f"Module {i % 40:02d} splits on tabs and commas but keeps empty fields only for odd "
                f"indexes; the failing record has a trailing tab, so reading the next one to compare.")
        if i % 10 == 0:
            calls = [plan(min(3, i // 10))]
        elif i % 7 == 0:
            calls = [{"tool_use": {"name": "grep", "input": {"pattern": "SEPARATOR",
                                                              "path": f"src/module_{(i + k) % 40:02d}.py"}}}
                     for k in range(width)]
        else:
            calls = [{"tool_use": {"name": "read_file", "input": {"path": f"src/module_{(i * width + k) % 40:02d}.py"}}}
                     for k in range(width)]
        out.append({"reply": [{"text": text}, *calls]})
    out.append({"reply": "The parser dropped the last field of lines ending in a tab: re.split left an empty "
                         "field that the filter removed. Fixed the filter in src/module_07.py; the whole suite "
                         "passes (212 tests)."})
    return out


SUMMARY = ("Summary for myself. Task: make tests/test_parser.py pass without changing the tests. "
           + " ".join(f"Finding {k}: module {k:02d} splits fields with re.split on tabs and commas and filters "
                      f"empty fields except at odd indexes; not the cause." for k in range(40))
           + " Left to do: fix the filter in src/module_07.py, then run the whole suite.")


@dataclass
class GoalRun:
    name: str
    turns: int
    success: bool
    result: str
    counters: dict[str, Any]
    calls: list[dict[str, Any]]
    misses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share(self) -> float:
        c = self.counters
        prompt = c["input"] + c["cache_read"] + c["cache_write"]
        return c["cache_read"] / prompt if prompt else 0.0

    @property
    def priced(self) -> float:
        c = self.counters
        return (c["input"] * PRICE["input"] + c["cache_read"] * PRICE["cache_read"]
                + c["cache_write"] * PRICE["cache_write"] + c["output"] * PRICE["output"])


def explain_misses(bodies: list[dict[str, Any]], calls: list[Call], model: str) -> list[dict[str, Any]]:
    """Requests that read less from cache than the whole prompt of the request before them, and why."""
    out = []
    for k in range(1, len(bodies)):
        before, now = prompt_blocks(bodies[k - 1]), prompt_blocks(bodies[k])
        expected = sum(b.tokens for b in before)
        if calls[k].cache_read >= expected:
            continue
        previous_end = len(before) - 1
        shared = next((i for i in range(min(len(before), len(now))) if before[i].prefix_hash != now[i].prefix_hash),
                      min(len(before), len(now)))
        breakpoints = [i for i, b in enumerate(now) if b.cache_ttl is not None]
        if calls[k].compaction:
            cause = ("compaction request" + (": sent without the tools, so its prefix differs from every cached one"
                                             if "tools" not in bodies[k] else "")
                     + ("; it carries no cache_control breakpoint" if not breakpoints else ""))
        elif not breakpoints:
            cause = "the request has no cache_control breakpoint"
        elif calls[k - 1].compaction:
            cause = "first request after a compaction: the history was replaced (expected; tools and system still read)"
        elif shared <= previous_end:
            cause = f"the prompt changed at block {shared} of {len(before)} (history is not append-only)"
        elif all(b - previous_end >= LOOKBACK_BLOCKS for b in breakpoints if b >= previous_end):
            cause = (f"the turns since the previous request added {len(now) - len(before)} blocks, and the only "
                     f"breakpoint after the previous one is on the newest block: the cache is looked up at most "
                     f"{LOOKBACK_BLOCKS} blocks back from a breakpoint, so the previous entry is not found")
        elif expected < minimum_cacheable_tokens(model):
            cause = f"the previous prompt ({expected} tokens) is shorter than the minimum cacheable length"
        else:
            cause = "cache entry expired or evicted"
        out.append({"request": k + 1, "read": calls[k].cache_read, "previous_prompt": expected, "cause": cause})
    return out


async def realistic_goal(name: str, turns: int, workdir: Path, *, width: int = 1,
                         context_tokens: int = 200_000) -> GoalRun:
    workspace = make_workspace(workdir / f"ws-{name}")
    scenario = Scenario.from_turns({"default": realistic_turns(turns, width), "compact": [{"reply": SUMMARY}]},
                                   repeat_last=True)
    todos = TodoList()
    config = LoopConfig(model=MODEL, max_tokens=8192, system=realistic_system_prompt(), goal_key=f"bench/{name}",
                        context_tokens=context_tokens)
    async with ScriptedModelServer(scenario) as server:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="bench", max_retries=0) as sdk:
            client = TimedClient(sdk, compact_key="compact")
            loop = AgentLoop(client, config, default_registry(todos), ToolContext(workspace=workspace), NullLink(),
                             FileCheckpoints(workspace, name), Budget(max_iterations=turns * 2), todos)
            outcome = await loop.run(TASK)
        bodies = [r.body for r in server.requests if r.path == "/v1/messages"]
    calls = client.calls
    assert len(bodies) == len(calls) and all(r.status == 200 for r in server.requests), server.mismatches
    return GoalRun(name, turns, outcome.success, outcome.result, vars(loop.counters) | {"partial": []},
                   [asdict(c) | {"prompt": c.prompt} for c in calls], explain_misses(bodies, calls, MODEL))


def compaction_summary(run: GoalRun) -> list[dict[str, int]]:
    """Per compaction: the prompt of the turn before it, of the compaction request, and of the turn after."""
    calls, out = run.calls, []
    for k, c in enumerate(calls):
        if c["compaction"]:
            out.append({"request": k + 1, "before": calls[k - 1]["prompt"], "compaction": c["prompt"],
                        "compaction_read": c["cache_read"],
                        "after": calls[k + 1]["prompt"] if k + 1 < len(calls) else 0})
    return out


# ---- reporting ---------------------------------------------------------------------------------

def machine(workdir: Path) -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    where = str(workdir.resolve())
    fs = max((m for m in mounts if where == m[1] or where.startswith(m[1].rstrip("/") + "/")),
             key=lambda m: len(m[1]), default=["?", "/", "?"])
    pg = subprocess.run([pg_bin("postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    redis = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                           text=True).stdout.split(" v=")[-1].split()[0]
    return {"nproc": len(os.sched_getaffinity(0)), "memory_gib": round(mem_kb / 2**20, 1), "cpu": cpu,
            "python": platform.python_version(), "anthropic": anthropic.__version__,
            "filesystem": f"{fs[2]} ({fs[0]})", "postgres": pg.split(")")[-1].strip() or pg, "redis": redis,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "**misses the target**"


def render_loop(info: dict[str, Any], command: str, overhead: dict[str, list[OverheadRun]],
                checkpoints: dict[str, dict[int, list[float]]], goals: int, cluster: bool) -> str:
    lines = [f"{info['date']}; {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM; "
             f"Python {info['python']}, anthropic {info['anthropic']}; PostgreSQL {info['postgres']} "
             f"(fsync on), Redis {info['redis']}; workspace on {info['filesystem']}; `{command}`", "",
             f"Loop overhead per iteration (target: median under {TARGET_OVERHEAD_MS:.0f} ms): the gap between a "
             f"model answer arriving and the next request leaving, scripted model at zero latency, "
             f"first {WARMUP} iterations of each run left out.", "",
             "| set-up | iterations × runs | median | p95 | max | median, first / second half of each run "
             "| mean, replay cross-check | median per iteration: "
             "checkpoints / status / steering / tool / loop itself | events, in the background "
             "| CPU time of this process, median "
             "| model round trip, median | CPU cores busy: machine (this process) | |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pod = ("(b) PostgreSQL checkpoints, " + ("status by server-side apply to a Goal on the local API server"
                                            if cluster else "no status writes (no cluster)")
           + ", Redis events and steering; a tool without side effects")
    names = {"a": "(a) file checkpoints, no-op link, no events", "b": pod,
             "c": "(c) as (b), but the tool has side effects: the answer is saved before the call runs"}
    for variant, runs in overhead.items():
        gaps = [g for r in runs for g in r.gaps_s]
        s = stats_ms(gaps)
        parts = {p: statistics.median([r.parts_ms.get(p, 0.0) for r in runs])
                 for p in ("checkpoint", "status", "events", "steering", "tool", "loop itself")}
        cross = statistics.median([r.mean_added_ms for r in runs])
        rtt = statistics.median([x for r in runs for x in r.rtt_s]) * 1000
        ok = s["median"] < TARGET_OVERHEAD_MS and all(r.success for r in runs)
        early = statistics.median([g for r in runs for g in r.gaps_s[:len(r.gaps_s) // 2]]) * 1000
        late = statistics.median([g for r in runs for g in r.gaps_s[len(r.gaps_s) // 2:]]) * 1000
        lines.append(f"| {names[variant]} | {runs[0].iterations} × {len(runs)} | {s['median']:.2f} ms | "
                     f"{s['p95']:.2f} ms | {s['max']:.1f} ms | {early:.2f} / {late:.2f} ms | "
                     f"{s['mean']:.2f} ms, {cross:.2f} ms | "
                     f"{parts['checkpoint']:.2f} / {parts['status']:.2f} / "
                     f"{parts['steering']:.2f} / {parts['tool']:.2f} / "
                     f"{parts['loop itself']:.2f} ms | {parts['events']:.2f} ms | "
                     f"{statistics.median([c for r in runs for c in r.cpu_s]) * 1000:.2f} ms | {rtt:.2f} ms | "
                     f"{statistics.median([r.machine_cores for r in runs]):.2f} "
                     f"({statistics.median([r.own_cores for r in runs]):.2f}) | {verdict(ok)} |")
    lines += ["", f"Checkpoint writes (target: p95 under {TARGET_CHECKPOINT_P95_MS:.0f} ms at 200 turns, not "
                  f"growing with the history): the three saves of a round of calls with side effects as the "
                  f"loop makes them (the model's answer, a finished call, the round's results), "
                  f"{goals} goals per history length.", "",
              "| store | turns already stored | saves | median | p95 | max | |", "|---|---|---|---|---|---|---|"]
    for store in ("PostgreSQL", "file"):
        for h, samples in checkpoints[store].items():
            s = stats_ms(samples)
            ok = s["p95"] < TARGET_CHECKPOINT_P95_MS
            lines.append(f"| {store} | {h} | {s['n']} | {s['median']:.2f} ms | {s['p95']:.2f} ms | "
                         f"{s['max']:.1f} ms | {verdict(ok)} |")
    (h, (load,)), = checkpoints["PostgreSQL load"].items()
    lines += ["", f"Resuming (loading a {h + 1}-turn checkpoint from PostgreSQL) took {load * 1000:.1f} ms."]
    return "\n".join(lines) + "\n"


def render_cache(info: dict[str, Any], command: str, goals: list[GoalRun], compacted: GoalRun,
                 uncompacted: GoalRun, context_tokens: int) -> str:
    lines = [f"{info['date']}; {info['nproc']} CPUs, {info['memory_gib']} GiB RAM; `{command}`", "",
             f"Share of prompt tokens read from cache, cache_read / (input + cache_read + cache_creation), over "
             f"whole scripted goals (target: at least {TARGET_CACHE_SHARE:.0%} at 50 turns). System prompt "
             f"{math.ceil(len(realistic_system_prompt()) / 4)} tokens, the built-in tools, file reads of "
             f"400–500 tokens.", "",
             "| goal | requests | cache share | first request | last request: prompt, read | "
             "requests reading less than the previous prompt | succeeded | |", "|---|---|---|---|---|---|---|---|"]
    for g in goals:
        first, last = g.calls[0], g.calls[-1]
        target = verdict(g.share >= TARGET_CACHE_SHARE) if g.turns == 50 else ""
        lines.append(f"| {g.name} | {len(g.calls)} | {g.share:.1%} | {first['prompt']} tokens, "
                     f"{first['cache_write']} written | {last['prompt']}, {last['cache_read']} | {len(g.misses)} | "
                     f"{'yes' if g.success else 'no'} | {target} |")
    causes: dict[str, list[str]] = {}
    for g in goals + [compacted]:
        for m in g.misses:
            causes.setdefault(m["cause"], []).append(f"{g.name} #{m['request']}")
    if causes:
        lines += ["", "Requests that read less than the whole previous prompt:", ""]
        lines += [f"- {cause}: {', '.join(where[:6])}{' …' if len(where) > 6 else ''} ({len(where)})"
                  for cause, where in causes.items()]
    lines += ["", f"Compaction: the same {compacted.turns}-turn goal with `context_tokens` {context_tokens} "
                  f"(compacted at 75%) and with the default 200000.", "",
              "| context_tokens | requests | compactions | largest prompt | prompt tokens, all requests | "
              "uncached (input + cache writes) | cache share | output | priced as input tokens¹ | succeeded |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for g, ctx in ((compacted, context_tokens), (uncompacted, 200_000)):
        c = g.counters
        lines.append(f"| {ctx} | {len(g.calls)} | {sum(x['compaction'] for x in g.calls)} | "
                     f"{max(x['prompt'] for x in g.calls)} | {c['input'] + c['cache_read'] + c['cache_write']} | "
                     f"{c['input'] + c['cache_write']} | {g.share:.1%} | {c['output']} | {g.priced:.0f} | "
                     f"{'yes' if g.success else 'no'} |")
    lines += ["", "Prompt tokens per request around each compaction:", "",
              "| request | turn before | compaction request (read from cache) | turn after |", "|---|---|---|---|"]
    lines += [f"| {s['request']} | {s['before']} | {s['compaction']} ({s['compaction_read']}) | {s['after']} |"
              for s in compaction_summary(compacted)]
    lines += ["", "¹ cache reads × 0.1, cache writes × 1.25, output × 5, the API's price ratios."]
    return "\n".join(lines) + "\n"


def write_docs(path: Path, key: str, text: str) -> None:
    write_section(path, *SECTIONS[key], text)


# ---- main ----------------------------------------------------------------------------------------

async def run_all(args: argparse.Namespace, services: Services, cluster: bool) -> dict[str, Any]:
    overhead: dict[str, list[OverheadRun]] = {"a": [], "b": [], "c": []}
    for run_no in range(args.repeat):
        for variant in overhead:
            if args.wait_quiet:
                other = await asyncio.to_thread(wait_quiet, args.wait_quiet)
                log(f"other processes use {other:.2f} cores")
            log(f"loop overhead ({variant}), run {run_no + 1} of {args.repeat}: {args.iterations} iterations")
            overhead[variant].append(await overhead_run(variant, args.iterations, services, run_no))
    log(f"checkpoint writes: {args.goals} goals per history length")
    checkpoints = await checkpoint_bench(services, [10, 100, 200], args.goals)
    goals = []
    for turns in (30, 50):
        log(f"prompt cache: {turns}-turn goal")
        goals.append(await realistic_goal(f"{turns}-turn", turns, services.workdir))
    for width in (8, 9):
        log(f"prompt cache: 30 turns of {width} parallel tool calls")
        goals.append(await realistic_goal(f"30-turn, {width} calls a turn", 30, services.workdir, width=width))
    log(f"compaction: {args.compaction_turns}-turn goal, context {args.context_tokens} and 200000")
    compacted = await realistic_goal(f"{args.compaction_turns}-turn, compacted", args.compaction_turns,
                                     services.workdir, context_tokens=args.context_tokens)
    uncompacted = await realistic_goal(f"{args.compaction_turns}-turn", args.compaction_turns, services.workdir)
    return {"overhead": overhead, "checkpoints": checkpoints, "goals": goals, "compacted": compacted,
            "uncompacted": uncompacted}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m e2e.bench.loop", description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=200, help="loop iterations per overhead run (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="overhead runs per set-up, interleaved (default 3)")
    p.add_argument("--goals", type=int, default=50, help="goals per history length for checkpoints (default 50)")
    p.add_argument("--compaction-turns", type=int, default=120, help="turns of the compaction goal (default 120)")
    p.add_argument("--context-tokens", type=int, default=40_000, help="its context window (default 40000)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each overhead run, wait up to this long until other processes use under 0.5 cores")
    p.add_argument("--quick", action="store_true", help="100 iterations, 1 run, 10 goals (a smoke test)")
    p.add_argument("--docs", type=Path, help="write the results into this file's Agent loop and Prompt cache sections")
    p.add_argument("--json", type=Path, help="write the raw results here as JSON")
    p.add_argument("--no-cluster", action="store_true",
                   help="set-ups (b) and (c) without status writes to an API server")
    p.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started running")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.repeat, args.goals = 100, 1, 10
    command = "python -m e2e.bench.loop " + " ".join(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so that the servers this run started are stopped

    signal.signal(signal.SIGTERM, interrupted)

    out_dir = harness.cache_dir() / "bench" / ("loop-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="work-", dir=out_dir))
    info = machine(workdir)
    base = Path(tempfile.mkdtemp(prefix="overseer-bench-loop-"))  # PostgreSQL runs as another user: not under /root
    postgres, redis = DurablePostgres(base), RedisServer(base)
    cluster = None
    kube: Kube | None = None
    try:
        log(f"starting PostgreSQL and Redis in {base}; results in {out_dir}")
        postgres.init()
        redis.start()
        if not args.no_cluster:
            log(f"starting the control plane ({harness.control_plane_dir()})")
            cluster = harness.start_cluster()
            kubectl = harness.Kubectl(cluster)
            harness.install_crds(kubectl)
            if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
                kubectl("create", "namespace", NAMESPACE)
            os.environ["KUBECONFIG"] = str(cluster.kubeconfig)

        async def login() -> Any:
            return load_credentials()

        async def everything() -> dict[str, Any]:
            nonlocal kube
            if cluster is not None:
                kube = Kube(login, "overseer-agent", pool_size=4)
            try:
                # Checkpoints as a goal pod writes them: with its namespace's own login, under row-level security.
                tenant_url = await provision_login(postgres.dsn, NAMESPACE)
                return await run_all(args, Services(tenant_url, redis.url, kube, workdir), cluster is not None)
            finally:
                if kube is not None:
                    await kube.close()

        results = asyncio.run(everything())
    finally:
        redis.stop()
        try:
            postgres.stop()
        except RuntimeError as e:
            log(f"stopping PostgreSQL: {e}")
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        if cluster is not None:
            if cluster.started_here and not args.keep_cluster:
                log("stopping the control plane this run started")
                harness.stop_cluster()
            else:
                harness.Kubectl(cluster)("delete", "namespace", NAMESPACE, "--wait=false", check=False)

    loop_text = render_loop(info, command, results["overhead"], results["checkpoints"], args.goals,
                            cluster is not None)
    cache_text = render_cache(info, command, results["goals"], results["compacted"], results["uncompacted"],
                              args.context_tokens)
    print("## Agent loop\n\n" + loop_text + "\n## Prompt cache\n\n" + cache_text)
    raw = {"machine": info, "command": command,
           "overhead": {k: [asdict(r) for r in v] for k, v in results["overhead"].items()},
           "checkpoints": {k: {str(h): s for h, s in v.items()} for k, v in results["checkpoints"].items()},
           "goals": [asdict(g) for g in [*results["goals"], results["compacted"], results["uncompacted"]]]}
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1))
    if args.json:
        args.json.write_text((out_dir / "results.json").read_text())
    if args.docs:
        write_docs(args.docs, "loop", loop_text)
        write_docs(args.docs, "cache", cache_text)
        log(f"wrote the Agent loop and Prompt cache sections of {args.docs}")
    ok = (all(r.success for runs in results["overhead"].values() for r in runs)
          and all(g.success for g in [*results["goals"], results["compacted"], results["uncompacted"]]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
