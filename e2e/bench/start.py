"""The start benchmark: from the apply of a Goal to its agent's first model request, and the
operator's own start.

    python -m e2e.bench.start [--goals 50] [--warm-pool N] [--docs docs/performance.md] [--json PATH] [--keep-cluster]
                              [--variant NOTE:NAME=VALUE[,NAME=VALUE...]]

On the local control plane (started if needed): one namespace, an API key Secret and an Agent
whose model is a scripted Messages API server in this process (it answers every request at once
with a final text), `overseer-operator --namespace NS` as a subprocess, and the kubelet's part
played by e2e/agent_runner.py (it starts the agent process once kwok reports the pod Running).

1. The operator: from its process start to `caches filled` in its log (wall time, CPU seconds,
   RSS then), and its RSS idle once the Agent is Ready.
2. N goals, one at a time (each once the previous agent process has exited, so every start is
   measured on an otherwise idle cluster), with these moments per goal:
   apply (this process POSTs the Goal) -> pod created (first seen by a watch) -> agent process
   started (the runner's Popen returned) -> Goal/Agent loaded (the agent's log line) -> first
   model request (it reaches the model server). The agent process's CPU seconds when its first
   request arrives come from /proc/PID/stat.
3. Imports alone: CPU seconds of `python -c "import overseer.agent.main"` (and of the
   operator's main, and of a bare interpreter), median of five runs.

With --warm-pool N the Agent keeps N warm pods (spec.warmPool): each goal is applied once an idle
warm pod's agent has logged that it waits, and its moments are apply -> claimed (the agent's log
line naming its goal) -> Goal/Agent loaded -> first model request. The resident memory of each
idle warm pod (its agent process and its tools process) is read from /proc before the goals.

With --variant (fresh pods only) the same number of goals runs again with agent processes given
more environment, e.g. before:PYTHONPATH=<tree of an older checkout>/operator (with its
agent_image/overseer/agent copied into operator/overseer/): goals alternate between the plain run
and each variant, so the machine's load weighs on all alike, and the imports alone are measured
for each. A table compares them.

The agent processes run from the source tree (and each variant's), compiled to bytecode before
the goals as the image is at its build: a .pyc-less tree would have every start compile the
overseer modules, a cost the image never pays.

The machine is shared: start costs are CPU seconds, which other processes inflate far less than
wall time; the load average and the share of the machine others kept busy are reported with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e import harness
from e2e.agent_runner import AgentRunner
from e2e.bench.baseline_controller import AGENTS, GOALS, PODS
from e2e.bench.dispatch import (Bench, Watcher, busy_seconds, cpu_seconds, log, machine, memory_kb, parse_variant,
                                percentile, settle)
from e2e.bench.docs import write_section
from overseer.testing.scripted_model import ScriptedModelServer

SECTION_BEGIN = "<!-- start:begin (written by python -m e2e.bench.start --docs) -->"
SECTION_END = "<!-- start:end -->"
AGENT = "coder"
TARGET_FIRST_REQUEST_S = 1.0  # apply -> first model request, p50, with a warm pod (issue target: 2 s without)
TARGET_AGENT_CPU_S = 1.0      # agent process CPU before its first request
LOADED = "loaded Goal"        # the agent's log line once it has read its Goal, Agent and Capabilities
GOAL_TIMEOUT_S = 600          # per goal: a shared machine can be very slow
STEPS = ("pod created", "agent process started", "Goal/Agent loaded", "first model request")
WARM_STEPS = ("claimed by the goal", "Goal/Agent loaded", "first model request")
WARM_BEGIN = "<!-- start-warm:begin (written by python -m e2e.bench.start --warm-pool N --docs) -->"
WARM_END = "<!-- start-warm:end -->"
WARM_READY = "warm pod ready"  # the agent's log line once a warm pod waits (overseer.agent.warm.WAITING)
CLAIMED = "claimed by goal"    # the agent's log line once a goal claimed its warm pod


@dataclass
class GoalStart:
    goal: str
    apply: float                         # wall-clock times (time.time()) of each moment
    pod_created: float | None = None
    process_started: float | None = None
    loaded: float | None = None
    first_request: float | None = None
    agent_cpu_s: float | None = None     # the agent process's CPU seconds at its first request
    claimed: float | None = None         # a warm pod's agent saw the goal that claimed it
    warm: bool = False
    idle_cpu_s: float | None = None      # a warm pod's agent process CPU seconds as the goal was applied
    variant: str = ""                    # the --variant its agent process ran with ("": none)

    def moments(self) -> list[float | None]:
        if self.warm:
            return [self.apply, self.claimed, self.loaded, self.first_request]
        return [self.apply, self.pod_created, self.process_started, self.loaded, self.first_request]


@dataclass
class StartResult:
    goals: int
    operator_caches_s: float | None = None      # process start -> "caches filled"
    operator_caches_cpu_s: float | None = None
    operator_rss_caches_mb: float | None = None
    operator_rss_idle_mb: float | None = None   # Agent Ready, operator settled
    imports_cpu_s: dict[str, float] = field(default_factory=dict)
    import_runs: int = 0
    starts: list[GoalStart] = field(default_factory=list)
    loadavg: tuple[list[float], list[float]] = ([], [])  # at the start and at the end
    others_busy: float | None = None            # share of all cores busy with anything but the agent processes
    warm_pool: int = 0                          # the Agent's spec.warmPool
    warm_rss_mb: list[tuple[float, float]] = field(default_factory=list)  # per idle warm pod: (agent, tools) RSS
    variants: dict[str, dict[str, str]] = field(default_factory=dict)      # note -> environment
    variant_imports_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # note -> code -> CPU


# ---- the model server ------------------------------------------------------------------------------

class StampedModelServer(ScriptedModelServer):
    """The scripted model, noting when each conversation's first request arrives and how much CPU
    the agent process that sent it had used by then."""

    def __init__(self, pid_of: Callable[[str], int | None]) -> None:
        super().__init__({"conversations": {"default": [{"reply": "Done: nothing to change."}]}})
        self.pid_of = pid_of
        self.first: dict[str, tuple[float, float | None]] = {}  # conversation -> (time, agent CPU seconds)

    async def _read(self, request: Any) -> Any:
        arrived = time.time()
        record, refusal = await super()._read(request)
        if request.path == "/v1/messages" and record.conversation not in self.first:
            pid = self.pid_of(record.conversation)
            try:
                cpu = cpu_seconds(pid) if pid else None
            except OSError:
                cpu = None
            self.first[record.conversation] = (arrived, cpu)
        return record, refusal


class ModelThread(threading.Thread):
    """The model server on its own event loop, so this process's waiting never delays an answer."""

    def __init__(self, server: StampedModelServer) -> None:
        super().__init__(daemon=True, name="model")
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.join(timeout=10)


@dataclass
class TimedRunner(AgentRunner):
    """The kubelet's part, noting when each goal's agent process was started."""

    started: dict[str, float] = field(default_factory=dict)  # pod -> time its process was started

    def _launch(self, pod: Any) -> None:
        super()._launch(pod)
        self.started.setdefault(pod.metadata.name, time.time())

    def pid_of_goal(self, goal: str) -> int | None:
        p = self.process_of_goal(goal)
        return p.proc.pid if p else None

    def pod_of_goal(self, goal: str) -> str | None:
        p = self.process_of_goal(goal)
        return p.pod if p else None

    def idle_warm_pods(self) -> list[str]:
        """Warm pods whose agent waits for a goal (logged in, imports done)."""
        with self._lock:
            candidates = [p.pod for p in self.processes.values() if not p.goal and p.proc.poll() is None]
        return [pod for pod in candidates if WARM_READY in self.log(pod) and CLAIMED not in self.log(pod)]


# ---- measuring ---------------------------------------------------------------------------------------

def import_cpu(code: str, runs: int = 5, env: dict[str, str] | None = None) -> float:
    """Median CPU seconds (user + system) of `python -c CODE`, interpreter start included."""
    samples = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True, cwd=harness.REPO, env={**os.environ, **(env or {})})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(samples)


def compile_bytecode(variants: dict[str, dict[str, str]]) -> list[str]:
    """Compile the sources the agent processes import (this tree's, and each variant's PYTHONPATH)
    to bytecode first, as the image does at build time: run from a source tree without it (or
    with PYTHONDONTWRITEBYTECODE set, as a read-only image sets it), every start would compile
    the overseer modules again and the figures would not be the image's. Timestamp-checked
    .pycs, not the image's unchecked ones: this tree is edited; the difference is a stat per module."""
    trees = [str(harness.REPO / "operator"), str(harness.REPO / "agent_image")]
    for env in variants.values():
        trees += [t for t in env.get("PYTHONPATH", "").split(os.pathsep) if t]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *trees], check=True, stdout=subprocess.DEVNULL)
    return trees


def log_time(line: str) -> float:
    """The wall-clock time of a line logged with logging's default asctime (local time, ms)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()  # local time, as logged


def operator_start(bench: Bench, ns: str, out_dir: Path, r: StartResult) -> harness.OperatorProcess:
    """Start the operator, timing its start to `caches filled`; return it running."""
    op = harness.OperatorProcess(bench.cluster, ns, out_dir / "operator.log",
                                 env={"OVERSEER_RESYNC_SECONDS": "600"}, startup_timeout=120)
    done = threading.Event()

    def watch(t0: float) -> None:
        offset = 0
        while not done.is_set():
            if op.proc is not None and op.log_path.exists():
                with open(op.log_path, errors="replace") as f:
                    f.seek(offset)
                    text = f.read()
                if "caches filled" in text:
                    r.operator_caches_s = time.time() - t0
                    r.operator_caches_cpu_s = cpu_seconds(op.proc.pid)
                    r.operator_rss_caches_mb = memory_kb(op.proc.pid)["VmRSS"] / 1024
                    return
                offset += len(text.encode())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, args=(time.time(),), daemon=True)
    watcher.start()
    try:
        op.start()
        watcher.join(timeout=120)
    finally:
        done.set()
    return op


def one_goal(bench: Bench, ns: str, i: int, model: StampedModelServer, runner: TimedRunner, pods: Watcher,
             offset: float, warm: bool = False, variant: str = "") -> GoalStart:
    """Apply goal i, wait for its first model request and for its agent process to exit; its moments.
    warm: an idle warm pod is waiting (the goal should be claimed by it)."""
    name = f"start-{i:03d}"
    key = f"{ns}/{name}"
    body = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "metadata": {"name": name},
            "spec": {"description": f"Start benchmark goal {i}: answer at once.", "agentRef": {"name": AGENT}}}
    idle = runner.idle_warm_pods() if warm else []
    idle_cpu = cpu_seconds(runner.processes[idle[0]].proc.pid) if len(idle) == 1 else None
    g = GoalStart(name, time.time(), warm=warm, idle_cpu_s=idle_cpu, variant=variant)
    bench.api.request("POST", GOALS.format(ns=ns), body)
    harness.wait_for(lambda: key in model.first, timeout=GOAL_TIMEOUT_S, interval=0.02,
                     description=f"the first model request of goal {name}")
    pod = runner.pod_of_goal(name)
    assert pod is not None
    harness.wait_for(lambda: pod in runner.finished, timeout=GOAL_TIMEOUT_S, interval=0.02,
                     description=f"the agent process of {name} to exit")
    if runner.finished[pod] != 0:
        raise AssertionError(f"agent of {name} exited {runner.finished[pod]}:\n{runner.log(pod)[-3000:]}")
    g.first_request, g.agent_cpu_s = model.first[key]
    g.process_started = runner.started.get(pod)
    seen = pods.seen.get(pod)
    g.pod_created = seen + offset if seen is not None else None
    lines = runner.log(pod).splitlines()
    line = next((x for x in lines if LOADED in x), None)
    g.loaded = log_time(line) if line else None
    claimed = next((x for x in lines if CLAIMED in x), None)
    g.claimed = log_time(claimed) if claimed else None
    if warm and claimed is None:
        raise AssertionError(f"goal {name} ran in pod {pod}, not in the idle warm pod")
    return g


def run(bench: Bench, n: int, out_dir: Path, warm_pool: int = 0,
        variants: dict[str, dict[str, str]] | None = None) -> StartResult:
    r = StartResult(n, warm_pool=warm_pool, variants=variants or {})
    configs = [("", {}), *r.variants.items()]  # goal i runs with configs[i % len(configs)]
    r.loadavg = (list(os.getloadavg()), [])
    ns = bench.namespace("start", n)
    k8s = harness.K8s(bench.cluster)
    runner = TimedRunner(bench.cluster, k8s, ns, out_dir, interval=0.05)
    model = StampedModelServer(lambda conversation: runner.pid_of_goal(conversation.split("/", 1)[1]))
    model_thread = ModelThread(model)
    model_thread.start()
    model_thread.ready.wait(30)
    op, runner_started = None, False
    try:
        agent = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Agent", "metadata": {"name": AGENT},
                 "spec": {"role": "Senior Python engineer",
                          "model": {"name": "claude-sonnet-5-5", "maxTokens": 4096, "baseURL": model.url,
                                    "apiKeySecretRef": {"name": "anthropic", "key": "api-key"}},
                          "capabilities": [], "maxConcurrentGoals": 2, "warmPool": warm_pool}}
        bench.api.request("POST", AGENTS.format(ns=ns), agent)
        op = operator_start(bench, ns, out_dir, r)
        assert op.pid is not None
        harness.wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                                     (bench.api.get(f"{AGENTS.format(ns=ns)}/{AGENT}").get("status") or {})
                                     .get("conditions") or []), timeout=GOAL_TIMEOUT_S, description=f"Agent {AGENT} Ready")
        settle(op.pid, quiet=2.0, limit=60)
        r.operator_rss_idle_mb = memory_kb(op.pid)["VmRSS"] / 1024
        log(f"start: operator caches filled after {r.operator_caches_s or 0:.2f} s, "
            f"{r.operator_caches_cpu_s or 0:.2f} s CPU; idle RSS {r.operator_rss_idle_mb:.0f} MB")

        url = PODS.format(ns=ns)
        pods = Watcher(bench.api, url, bench.api.get(url)["metadata"]["resourceVersion"], "pods")
        pods.start()
        pods.opened.wait(30)
        offset = time.time() - time.perf_counter()  # the watcher notes perf_counter times
        runner.start()
        runner_started = True
        if warm_pool:
            harness.wait_for(lambda: len(runner.idle_warm_pods()) >= warm_pool, timeout=GOAL_TIMEOUT_S,
                             description=f"{warm_pool} idle warm pods")
            idle = runner.idle_warm_pods()
            settle(runner.processes[idle[0]].proc.pid, quiet=1.0, limit=30)
            r.warm_rss_mb = [_warm_rss(runner, pod) for pod in idle]
        busy0, wall0, children0 = busy_seconds(), time.monotonic(), _children_cpu()
        for i in range(n * len(configs)):
            note, runner.extra_env = configs[i % len(configs)]
            try:
                if warm_pool:  # every goal finds a warm pod waiting: the pool refilled behind the last
                    harness.wait_for(runner.idle_warm_pods, timeout=GOAL_TIMEOUT_S, interval=0.05,
                                     description="an idle warm pod")
                r.starts.append(one_goal(bench, ns, i, model, runner, pods, offset, warm=bool(warm_pool), variant=note))
            except AssertionError as e:  # a machine too loaded to finish: keep what was measured
                log(f"start: stopping after {i} goals: {e}")
                break
            g = r.starts[-1]
            if (i + 1) % 10 == 0 or i + 1 == n * len(configs):
                log(f"start: {i + 1}/{n * len(configs)} goals; last apply -> first request {g.first_request - g.apply:.2f} s, "
                    f"agent CPU {g.agent_cpu_s or 0:.2f} s")
        wall = time.monotonic() - wall0
        # What else kept the machine busy while goals started: all busy CPU but the agents' own
        # (the runner reaps each agent process, so their CPU is in this process's children's).
        r.others_busy = (max(0.0, busy_seconds() - busy0 - (_children_cpu() - children0))
                        / (wall * len(os.sched_getaffinity(0))))
        pods.stop.set()
    finally:
        if runner_started:
            runner.stop()
        if op is not None:
            op.stop()
        model_thread.stop()
        k8s.close()
        bench.delete_namespace(ns)
    r.loadavg = (r.loadavg[0], list(os.getloadavg()))
    return r


def _warm_rss(runner: TimedRunner, pod: str) -> tuple[float, float]:
    """(agent process, tools process) resident memory of an idle warm pod, in MB."""
    p = runner.processes[pod]
    tools = memory_kb(p.tools.pid)["VmRSS"] / 1024 if p.tools is not None and p.tools.poll() is None else 0.0
    return memory_kb(p.proc.pid)["VmRSS"] / 1024, tools


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---- reporting ---------------------------------------------------------------------------------------

def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _commit() -> str:
    """'commit abc1234; ', or '' outside a git checkout."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.REPO, capture_output=True, text=True)
    return f"commit {out.stdout.strip()}; " if out.returncode == 0 and out.stdout.strip() else ""


def _p(values: list[float], q: float) -> str:
    v = percentile(values, q)
    return "—" if v is None else f"{v:.2f} s"


def render(r: StartResult, info: dict[str, Any], command: str) -> str:
    rows = []
    starts = [s for s in r.starts if None not in s.moments() and not s.variant]
    names = ["apply", *(WARM_STEPS if r.warm_pool else STEPS)]
    for i in range(1, len(names)):
        spans = [s.moments()[i] - s.moments()[i - 1] for s in starts]  # type: ignore[operator]
        rows.append(f"| {names[i - 1]} → {names[i]} | {_p(spans, 0.5)} | {_p(spans, 0.95)} |")
    total = [s.first_request - s.apply for s in starts]  # type: ignore[operator]
    cpu = [s.agent_cpu_s for s in r.starts if s.agent_cpu_s is not None and not s.variant]
    p50 = percentile(total, 0.5)
    target = TARGET_FIRST_REQUEST_S if r.warm_pool else 2.0
    verdict = "—" if p50 is None else ("meets" if p50 < target else "**misses**")
    cpu50 = percentile(cpu, 0.5)
    cpu_verdict = "—" if cpu50 is None else ("meets" if cpu50 < TARGET_AGENT_CPU_S else "**misses**")
    load0, load1 = r.loadavg
    lines = [
        f"{info['date']}; {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM; Python {info['python']}, "
        f"anthropic {_version('anthropic')}; {_commit()}"
        f"`{command}`. Load average (1 min) {load0[0] if load0 else 0:.1f} at the start, "
        f"{load1[0] if load1 else 0:.1f} at the end; while the goals started, everything but their agent processes "
        f"(other work on the machine, the control plane, the operator) kept {100 * (r.others_busy or 0):.0f} % of "
        f"its cores busy, so wall times are long and CPU seconds are the figures to compare. The agent processes ran "
        f"from bytecode compiled before the run, as the image's are.",
        "",
        f"**A goal's start** ({len(starts)} goals, one at a time, "
        + (f"each claiming an idle warm pod, spec.warmPool {r.warm_pool}):" if r.warm_pool else "no warm pods):"),
        "",
        "| step | p50 | p95 |",
        "|---|---|---|",
        *rows,
        f"| **apply → first model request** | **{_p(total, 0.5)}** | **{_p(total, 0.95)}** |",
        f"| agent process CPU before its first request{' (since its pod started)' if r.warm_pool else ''} | "
        f"{_p(cpu, 0.5)} | {_p(cpu, 0.95)} |",
    ]
    after_claim = [s.agent_cpu_s - s.idle_cpu_s for s in r.starts if s.agent_cpu_s is not None and s.idle_cpu_s is not None]
    if r.warm_pool:
        lines.append(f"| agent process CPU from apply to its first request | {_p(after_claim, 0.5)} | "
                     f"{_p(after_claim, 0.95)} |")
    lines.append("")
    if r.warm_pool:
        agent_mb = [a for a, _ in r.warm_rss_mb]
        tools_mb = [t for _, t in r.warm_rss_mb]
        lines += [
            f"Target: apply → first model request p50 under {TARGET_FIRST_REQUEST_S:g} s with a warm pod ({verdict}).",
            "",
            f"**What the pool costs at rest**: an idle warm pod holds {statistics.median(agent_mb):.0f} MB resident in "
            f"its agent process and {statistics.median(tools_mb):.0f} MB in its tools process (median of "
            f"{len(agent_mb)} idle pods, VmRSS), and no CPU while it waits (one open watch on the API server).",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        f"Target: apply → first model request p50 under 2 s without a warm pod ({verdict}); agent CPU before "
        f"the first request under {TARGET_AGENT_CPU_S:g} s ({cpu_verdict}).",
        "",
        "**The operator's start** (one Agent, no goals):",
        "",
        "| process start → caches filled | CPU to caches filled | RSS then | RSS idle, Agent Ready |",
        "|---|---|---|---|",
        f"| {r.operator_caches_s or 0:.2f} s | {r.operator_caches_cpu_s or 0:.2f} s | "
        f"{r.operator_rss_caches_mb or 0:.0f} MB | {r.operator_rss_idle_mb or 0:.0f} MB |",
        "",
        f"**Imports alone** (CPU seconds of `python -c ...`, interpreter start included, median of {r.import_runs}):",
        "",
        "| code | CPU |",
        "|---|---|",
        *[f"| `{code}` | {sec:.2f} s |" for code, sec in r.imports_cpu_s.items()],
    ]
    if r.variants:
        lines += ["", *render_variants(r)]
    return "\n".join(lines) + "\n"


def render_variants(r: StartResult) -> list[str]:
    """The plain run beside each --variant, goals interleaved in one run."""
    code = IMPORTS[1]
    lines = [f"**The same run with each variant** (goals alternating; CPU seconds; `{code}` median of {r.import_runs}):",
             "", f"| agent processes | goals | apply → first model request p50 | agent CPU before its first request "
             f"p50 / p95 | `{code}` |", "|---|---|---|---|---|"]
    for note in ["", *r.variants]:
        mine = [s for s in r.starts if s.variant == note]
        waits = [s.first_request - s.apply for s in mine if s.first_request is not None]
        cpu = [s.agent_cpu_s for s in mine if s.agent_cpu_s is not None]
        imports = r.imports_cpu_s if not note else r.variant_imports_cpu_s.get(note, {})
        name = "this tree" if not note else f"{note} (" + ", ".join(f"{k}={v}" for k, v in r.variants[note].items()) + ")"
        lines.append(f"| {name} | {len(waits)} | {_p(waits, 0.5)} | "
                     f"{_p(cpu, 0.5)} / {_p(cpu, 0.95)} | "
                     + (f"{imports[code]:.2f} s |" if code in imports else "— |"))
    return lines


IMPORTS = ("pass", "import overseer.agent.main", "import overseer.operator.main")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m e2e.bench.start", description=__doc__.splitlines()[0])
    p.add_argument("--goals", type=int, default=50, help="goals started one after another (default 50)")
    p.add_argument("--docs", type=Path, help="write the tables into this file's Start section")
    p.add_argument("--json", type=Path, help="write the raw result here as JSON")
    p.add_argument("--import-runs", type=int, default=5, help="runs of each import measurement (default 5)")
    p.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started running")
    p.add_argument("--warm-pool", type=int, default=0,
                   help="the Agent's spec.warmPool: measure goals claiming idle warm pods (default 0: fresh pods)")
    p.add_argument("--variant", action="append", default=[], metavar="NOTE:NAME=VALUE[,NAME=VALUE...]",
                   help="also start as many goals with agent processes given this environment, alternating with "
                        "the plain ones; e.g. before:PYTHONPATH=/tmp/old/operator (fresh pods only)")
    args = p.parse_args(argv)
    try:
        variants = dict(parse_variant(text) for text in args.variant)
    except ValueError as e:
        p.error(str(e))
    if variants and args.warm_pool:
        p.error("--variant measures fresh pods: leave out --warm-pool")
    command = "python -m e2e.bench.start " + " ".join(argv)
    info = machine()
    out_dir = harness.cache_dir() / "bench" / ("start-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"starting the control plane ({harness.control_plane_dir()}); logs and raw results in {out_dir}")
    log(f"bytecode compiled in {', '.join(compile_bytecode(variants))}")
    cluster = harness.start_cluster()
    bench = Bench(cluster, 1, out_dir)
    try:
        harness.install_crds(bench.kubectl)
        result = run(bench, args.goals, out_dir, args.warm_pool, variants)
    finally:
        if cluster.started_here and not args.keep_cluster:
            log("stopping the control plane this run started")
            harness.stop_cluster()
    if not args.warm_pool:  # the warm table is the goals' alone
        result.import_runs = args.import_runs
        result.imports_cpu_s = {code: import_cpu(code, args.import_runs) for code in IMPORTS}
        result.variant_imports_cpu_s = {note: {code: import_cpu(code, args.import_runs, env) for code in IMPORTS}
                                        for note, env in variants.items()}
    table = render(result, info, command)
    print(table)
    (out_dir / "result.json").write_text(json.dumps({"machine": info, "command": command,
                                                     "result": asdict(result)}, indent=1))
    if args.json:
        args.json.write_text((out_dir / "result.json").read_text())
    if args.docs:
        begin, end = (WARM_BEGIN, WARM_END) if args.warm_pool else (SECTION_BEGIN, SECTION_END)
        write_section(args.docs, "Start", begin, end, table)
        log(f"wrote the tables into {args.docs}")
    complete = [s for s in result.starts if None not in s.moments()]
    return 0 if len(complete) == args.goals * (1 + len(variants)) and result.operator_caches_s is not None else 1


if __name__ == "__main__":
    sys.exit(main())
