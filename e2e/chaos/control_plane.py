"""Fault scenarios of the control plane's side: the operator SIGKILLed, its leader killed, the
kube-apiserver and etcd restarted, deadlines that pass while the operator is down.

Goal pods are played by e2e/chaos/kubelet.py (no agent process: hundreds of goals must fit in
minutes), and every pod is recorded by e2e/chaos/ledger.py's own watch; each scenario returns one Row.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from e2e.bench.dispatch import memory_kb
from e2e.chaos.context import Context
from e2e.chaos.kubelet import GoalPlan, StandInKubelet, plans
from e2e.chaos.ledger import TERMINAL, PodLedger, goals, tally, wait_ended
from e2e.chaos.table import Row
from e2e.harness import OperatorProcess, free_port, http_get, policies_configured, wait_for
from e2e.world import World

LEASE = {"OVERSEER_LEASE_DURATION_SECONDS": "4", "OVERSEER_LEASE_RENEW_DEADLINE_SECONDS": "3",
         "OVERSEER_LEASE_RETRY_PERIOD_SECONDS": "0.5"}
GROUP, VERSION = "overseer.dev", "v1alpha1"
QUIET = 10  # seconds after a restart in which the API server's LIST calls are counted


# ---- shared steps ----------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_agents(ctx: Context, world: World, count: int, slots: int) -> list[str]:
    names = [f"a{i:02d}" for i in range(count)]
    for name in names:
        world.agent(name, max=slots)
    for name in names:
        world.wait_condition("agent", name, "Ready", "True", timeout=60)
    return names


def goal_body(name: str, agent: str, priority: int = 0, depends: list[str] | None = None, retries: int = 0,
              timeout: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"description": f"Chaos goal {name}", "agentRef": {"name": agent}, "priority": priority,
                            "dependsOn": depends or [], "maxRetries": retries}
    if timeout:
        spec["timeout"] = timeout
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Goal", "metadata": {"name": name}, "spec": spec}


def create_goals(ctx: Context, ns: str, bodies: list[dict[str, Any]], threads: int = 8) -> None:
    def create(body: dict[str, Any]) -> None:
        ctx.k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "goals", body)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, bodies))


def workload(names: list[str], agents: list[str], rng: random.Random, plan: dict[str, GoalPlan],
             dependency_share: float = 0.3) -> list[dict[str, Any]]:
    """Goals spread over the agents, with random priorities, some depending on one or two earlier
    goals, retries where the plan fails an attempt first."""
    bodies = []
    for i, name in enumerate(names):
        depends = sorted(set(rng.sample(names[max(0, i - 50):i], k=min(i, rng.choice((1, 2)))))) \
            if i and rng.random() < dependency_share else []
        retries = 1 if plan[name].exits[0] != 0 and len(plan[name].exits) > 1 else 0
        bodies.append(goal_body(name, agents[i % len(agents)], rng.randint(0, 10), depends, retries))
    return bodies


def all_goal_names(ctx: Context, ns: str, names: list[str], plan: dict[str, GoalPlan],
                   present: dict[str, Any] | None = None) -> list[str]:
    """The goals applied and the sub-goals that were created (of `present`, when already listed)."""
    present = goals(ctx.k8s, ns) if present is None else present
    return names + [p.subgoal for p in plan.values() if p.subgoal and p.subgoal in present]


def row_from(ctx: Context, ns: str, scenario: str, done: str, names: list[str], ledger: PodLedger,
             started: float, notes: list[str]) -> Row:
    t = tally(ctx.k8s, ns, names)
    keep(ctx, ns)
    dup = ledger.duplicates()
    if t.lost:
        notes.append(f"lost: {', '.join(t.lost[:5])}")
    if dup:
        notes.append(f"duplicate pods: {', '.join(sorted(dup)[:5])}")
    return Row(scenario=scenario, done=done, goals_in=t.goals_in, finished=t.finished, failed=t.failed,
               lost=len(t.lost), duplicate_pods=len(dup), reasons=dict(t.reasons),
               seconds=time.monotonic() - started, notes="; ".join(notes))


def keep(ctx: Context, ns: str) -> None:
    """The namespace's goals, pods and events as they ended, next to the operator's logs."""
    for kind in ("goals", "pods", "events"):
        try:
            out = ctx.kubectl("get", kind, "-n", ns, "-o", "yaml", check=False, timeout=120).stdout
        except subprocess.TimeoutExpired:
            # 10,000 goals as YAML on a loaded machine: the row is counted already, the copy is a log
            out = f"kubectl get {kind} -o yaml did not answer within 120 s\n"
        (ctx.workdir / f"{ns}-{kind}.yaml").write_text(out)


def expected_failures(names: list[str], plan: dict[str, GoalPlan]) -> int:
    return sum(1 for n in names if plan.get(n, GoalPlan()).exits[-1] != 0)


# ---- the operator SIGKILLed --------------------------------------------------------------------------


def operator_sigkill(ctx: Context, full: bool) -> Row:
    n, kills, agent_count, slots = (1000, 50, 10, 10) if full else (100, 5, 4, 5)
    rng = random.Random(2101)
    started = time.monotonic()
    ns = ctx.namespace("sigkill")
    op = ctx.operator(ns)
    world = ctx.world(ns, op)
    agents = start_agents(ctx, world, agent_count, slots)
    names = [f"g-{i:04d}" for i in range(n)]
    plan = plans(names, rng)
    ledger = PodLedger(ctx.k8s, ns).start()
    ctx.on_close(ledger.stop)
    kubelet = StandInKubelet(ctx.cluster, ctx.k8s, ns, plan).start()
    ctx.on_close(kubelet.stop)

    bodies = workload(names, agents, rng, plan)
    def trickle() -> None:  # goals keep arriving while the operator is killed
        for i in range(0, n, 50):
            create_goals(ctx, ns, bodies[i:i + 50])
            time.sleep(0.5)
    creating = ThreadPoolExecutor(1)
    created = creating.submit(trickle)
    downtime = 0.0
    for _ in range(kills):  # at random moments: while goals are created, dispatched, running, ending
        time.sleep(rng.uniform(1.0, 5.0))
        op.kill()
        down = time.monotonic()
        time.sleep(rng.uniform(0.0, 1.0))
        op.start()
        downtime += time.monotonic() - down
    created.result()
    creating.shutdown()
    wait_ended(ctx.k8s, ns, names, timeout=max(300.0, n * 0.6))
    everything = all_goal_names(ctx, ns, names, plan)
    wait_ended(ctx.k8s, ns, everything, timeout=120)
    notes = [f"{agent_count} Agents x {slots} slots; {len(everything) - n} sub-goals; "
             f"{sum(1 for b in bodies if b['spec']['dependsOn'])} goals with dependencies; "
             f"{expected_failures(names, plan)} planned to fail for good; {ledger.pods_seen} pods; "
             f"operator down {downtime:.0f} s in all"]
    return row_from(ctx, ns, f"operator SIGKILL x{kills}",
                    f"{n} goals (priorities, dependencies, sub-goals, retries) on {agent_count} Agents; the operator "
                    f"SIGKILLed {kills} times at random moments (1-5 s apart) and started again",
                    everything, ledger, started, notes)


# ---- 10,000 goals across 100 Agents, the operator SIGKILLed throughout --------------------------------


RSS_TARGET_MB = 300


class PeakMemory:
    """The operator's peak resident memory across its restarts: VmHWM of each process, read every
    second (a SIGKILLed process takes its figure along, so the last second before a kill is the gap)."""

    def __init__(self, op: OperatorProcess, every: float = 1.0):
        self.op, self.every = op, every
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator-rss", daemon=True)

    def start(self) -> "PeakMemory":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def read(self) -> None:
        pid = self.op.pid
        try:
            hwm = memory_kb(pid)["VmHWM"] / 1024 if pid and self.op.running else 0.0
        except (OSError, KeyError):  # exited between the check and the read
            return
        self.peak_mb = max(self.peak_mb, hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.read()


def ended(present: dict[str, dict[str, Any]], names: list[str]) -> int:
    return sum(1 for n in names if ((present.get(n) or {}).get("status") or {}).get("phase") in TERMINAL)


def load(ctx: Context, full: bool) -> Row:
    """Many goals at once (priorities, dependencies, sub-goals, retries) while the operator is
    SIGKILLed again and again: every goal ends, and the operator's memory stays under the target.
    Each kill comes 10-40 s after the operator is ready again (its caches filled): with ten thousand
    goals a restart takes tens of seconds, and a kill during it would only test the restart."""
    n, agent_count, slots, kills = (10_000, 100, 10, 10) if full else (300, 10, 5, 3)
    rng = random.Random(2105)
    started = time.monotonic()
    ns = ctx.namespace("load")
    op = ctx.operator(ns)
    world = ctx.world(ns, op)
    agents = start_agents(ctx, world, agent_count, slots)
    names = [f"g-{i:05d}" for i in range(n)]
    plan = plans(names, rng, subgoal_share=0.01, hold=(0.2, 1.0))
    ledger = PodLedger(ctx.k8s, ns).start()
    ctx.on_close(ledger.stop)
    kubelet = StandInKubelet(ctx.cluster, ctx.k8s, ns, plan).start()
    ctx.on_close(kubelet.stop)
    memory = PeakMemory(op).start()
    ctx.on_close(memory.stop)
    bodies = workload(names, agents, rng, plan)
    log(f"load: {agent_count} Agents Ready; creating {n} goals")

    stop_creating = threading.Event()
    ctx.on_close(stop_creating.set)  # a scenario that fails half way stops creating goals

    def create_all() -> None:
        for i in range(0, n, 500):
            if stop_creating.is_set():
                return
            create_goals(ctx, ns, bodies[i:i + 500], threads=16)
    creating = ThreadPoolExecutor(1)
    created = creating.submit(create_all)
    downtime, killed, ready_again = 0.0, 0, []
    next_kill = time.monotonic() + rng.uniform(10, 40)
    deadline = time.monotonic() + max(600.0, n * 0.6)
    done, everything, next_count = 0, names, 0.0
    while time.monotonic() < deadline:
        time.sleep(2)
        if killed < kills and time.monotonic() >= next_kill:
            memory.read()
            op.kill()
            down = time.monotonic()
            time.sleep(rng.uniform(0.0, 1.0))
            op.start()
            wait_for(lambda: op.probe("/readyz")[0] == 200, timeout=600, interval=0.5,
                     description="the restarted operator ready (caches filled)")
            ready_again.append(time.monotonic() - down)
            downtime += ready_again[-1]
            killed += 1
            next_kill = time.monotonic() + rng.uniform(10, 40)
        if time.monotonic() < next_count:
            continue
        next_count = time.monotonic() + (30 if full else 5)  # a list of every goal costs the API server too
        try:
            present = goals(ctx.k8s, ns)
        except Exception:  # noqa: BLE001 - count again on the next round
            continue
        everything = all_goal_names(ctx, ns, names, plan, present)  # one list per round: thousands of goals
        done = ended(present, everything)
        log(f"load: {len(present)} goals present, {done}/{len(everything)} ended, {ledger.pods_seen} pods, "
            f"operator killed {killed}x, peak RSS {memory.peak_mb:.0f} MB")
        if created.done() and done == len(everything) and killed >= min(kills, 1):
            break
    created.result()
    creating.shutdown()
    memory.read()
    memory.stop()
    notes = [f"{agent_count} Agents x {slots} slots; {len(everything) - n} sub-goals; "
             f"{sum(1 for b in bodies if b['spec']['dependsOn'])} goals with dependencies; "
             f"{expected_failures(names, plan)} planned to fail for good; {ledger.pods_seen} pods; operator "
             f"SIGKILLed {killed} times, ready again {min(ready_again, default=0):.0f}-{max(ready_again, default=0):.0f} s "
             f"after a kill, down {downtime:.0f} s in all; operator peak RSS {memory.peak_mb:.0f} MB "
             f"(target {RSS_TARGET_MB} MB)"]
    row = row_from(ctx, ns, f"load {n:,} goals, operator SIGKILL x{killed}",
                   f"{n:,} goals (priorities, dependencies, sub-goals, retries) on {agent_count} Agents, created at "
                   f"once; the operator SIGKILLed {killed} times, each 10-40 s after it was ready again, and started again",
                   everything, ledger, started, notes)
    if memory.peak_mb >= RSS_TARGET_MB:
        raise ScenarioFailed(replace(row, notes=row.notes + f"; RSS over the {RSS_TARGET_MB} MB target"))
    return row


# ---- the leader killed -------------------------------------------------------------------------------


def holder(ctx: Context, ns: str) -> str | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        lease = client.CoordinationV1Api(ctx.k8s.api_client).read_namespaced_lease("overseer-operator", ns)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def identity(op: OperatorProcess) -> str | None:
    found = re.search(r"Lease \S+ as (\S+)", op.log_text())
    return found.group(1) if found else None


def leader_kill(ctx: Context, full: bool) -> Row:
    n, kills = (300, 10) if full else (40, 2)
    rng = random.Random(2102)
    started = time.monotonic()
    ns = ctx.namespace("leader")
    args = ("--leader-elect", "--leader-elect-namespace", ns)
    replicas = [ctx.operator(ns, *args, env=LEASE) for _ in range(3)]
    world = ctx.world(ns, replicas[0])
    agents = start_agents(ctx, world, 4, 5)
    names = [f"g-{i:04d}" for i in range(n)]
    plan = plans(names, rng, hold=(0.5, 2.5))
    ledger = PodLedger(ctx.k8s, ns).start()
    ctx.on_close(ledger.stop)
    kubelet = StandInKubelet(ctx.cluster, ctx.k8s, ns, plan).start()
    ctx.on_close(kubelet.stop)
    bodies = workload(names, agents, rng, plan)
    per_kill = [bodies[i::kills] for i in range(kills)]
    takeovers: list[float] = []
    for batch in per_kill:
        create_goals(ctx, ns, batch)
        time.sleep(rng.uniform(1.0, 4.0))
        current = wait_for(lambda: holder(ctx, ns), timeout=60, description="a replica holds the Lease")
        leader = next(op for op in replicas if op.running and identity(op) == current)
        leader.kill()
        killed = time.monotonic()
        replicas.remove(leader)
        replicas.append(ctx.operator(ns, *args, env=LEASE))  # the Deployment's replacement: two standbys again
        wait_for(lambda: (h := holder(ctx, ns)) and h != current, timeout=60,
                 description="a standby takes the Lease over")
        takeovers.append(time.monotonic() - killed)
    wait_ended(ctx.k8s, ns, names, timeout=300)
    everything = all_goal_names(ctx, ns, names, plan)
    wait_ended(ctx.k8s, ns, everything, timeout=120)
    notes = [f"3 replicas, Lease 4 s; take-over after a kill: median {sorted(takeovers)[len(takeovers) // 2]:.1f} s, "
             f"longest {max(takeovers):.1f} s; {ledger.pods_seen} pods"]
    return row_from(ctx, ns, f"leader SIGKILL x{kills}",
                    f"3 replicas under --leader-elect; {n} goals applied in {kills} batches, the Lease holder "
                    f"SIGKILLed after each and replaced, so two standbys always wait",
                    everything, ledger, started, notes)


# ---- the kube-apiserver and etcd restarted -----------------------------------------------------------


def restart_component(ctx: Context, name: str, sig: signal.Signals, down: float = 2.0) -> float:
    """Stop a control-plane process with sig (by the PID up.sh recorded), wait `down` seconds, and start
    it again with the same command line, as up.sh does; returns the seconds until the API is ready."""
    run = ctx.cluster.run_dir
    pid_file = run / "pids" / f"{name}.pid"
    pid = int(pid_file.read_text())
    cmd = (open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").split(b"\0"))
    os.kill(pid, sig)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=60,
             description=f"{name} ({pid}) to exit")
    time.sleep(down)
    t0 = time.monotonic()
    with open(run / "logs" / f"{name}.log", "ab") as log:
        subprocess.run(["setsid", "-f", "bash", "-c", 'echo $$ > "$1"; shift; exec "$@"', "_", str(pid_file),
                        *[c.decode() for c in cmd]], stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)
    wait_for(lambda: ctx.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, timeout=120,
             interval=0.5, description=f"the API server ready after restarting {name}")
    return time.monotonic() - t0


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")
    except OSError:
        return True


def list_calls(ctx: Context) -> dict[str, float]:
    """LIST requests the API server has served since it started, by resource (apiserver_request_total)."""
    out: dict[str, float] = {}
    text = ctx.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("verb") == "LIST":
                out[s.labels.get("resource", "")] = out.get(s.labels.get("resource", ""), 0) + s.value
    return out


def operator_relists(port: int) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(body) if f.name == "overseer_informer_relists"
               for s in f.samples if s.name.endswith("_total"))


def restart_mid_run(ctx: Context, full: bool, component: str) -> Row:
    n = 400 if full else 40
    rng = random.Random(2103 if component == "kube-apiserver" else 2104)
    started = time.monotonic()
    ns = ctx.namespace(component)
    metrics_port = free_port()
    op = ctx.operator(ns, "--metrics-port", str(metrics_port))
    world = ctx.world(ns, op)
    agents = start_agents(ctx, world, 4, 10)
    names = [f"g-{i:04d}" for i in range(n)]
    plan = plans(names, rng, subgoal_share=0.0, hold=(2.0, 6.0))  # no goal lists by the stand-in
    ledger = PodLedger(ctx.k8s, ns).start()
    ctx.on_close(ledger.stop)
    kubelet = StandInKubelet(ctx.cluster, ctx.k8s, ns, plan).start()
    ctx.on_close(kubelet.stop)
    bodies = workload(names, agents, rng, plan)
    half = n // 2
    create_goals(ctx, ns, bodies[:half])
    wait_for(lambda: sum(1 for g in goals(ctx.k8s, ns).values()
                         if (g.get("status") or {}).get("phase") == "Running") >= min(20, half // 2), timeout=120,
             description="goals running before the restart")
    relists_before = operator_relists(metrics_port)
    lists_before = list_calls(ctx) if component == "etcd" else {}
    # The API server is killed outright (a SIGTERM waits a minute for open watches to drain); etcd is
    # stopped cleanly, as it runs without fsync here and a SIGKILL could lose what it acknowledged.
    ready_after = restart_component(ctx, component, signal.SIGKILL if component == "kube-apiserver" else signal.SIGTERM)
    time.sleep(QUIET)  # what the restart set off, before this scenario lists anything itself
    lists = list_calls(ctx)
    goal_lists = lists.get("goals", 0) - lists_before.get("goals", 0)
    agent_lists = lists.get("agents", 0) - lists_before.get("agents", 0)
    relists = operator_relists(metrics_port) - relists_before
    create_goals(ctx, ns, bodies[half:])  # applied after the restart: the watches must deliver them
    wait_ended(ctx.k8s, ns, names, timeout=max(300.0, n * 0.6))
    # After an API server restart the policy whose paramKind is Agent fails closed for a while
    # (docs/security.md): leave the cluster admitting sub-goals again for whatever runs next.
    wait_for(lambda: policies_configured(ctx.kubectl), timeout=240, interval=2,
             description="the admission policies configured again")
    notes = [f"{half} goals applied before the restart, {n - half} after; API ready {ready_after:.1f} s after the "
             f"start; LISTs in the {QUIET} s after it: goals {goal_lists:.0f}, agents {agent_lists:.0f} (API server's "
             f"apiserver_request_total); operator relists {relists:.0f} (overseer_informer_relists_total); "
             f"{ledger.pods_seen} pods"]
    what = "kube-apiserver SIGKILLed, started again 2 s later" if component == "kube-apiserver" else \
        "etcd stopped (SIGTERM), started again on its data 2 s later"
    return row_from(ctx, ns, f"{component} restart", f"{n} goals on 4 Agents; {what} while {half} ran or queued",
                    names, ledger, started, notes)


def apiserver_restart(ctx: Context, full: bool) -> Row:
    return restart_mid_run(ctx, full, "kube-apiserver")


def etcd_restart(ctx: Context, full: bool) -> Row:
    return restart_mid_run(ctx, full, "etcd")


# ---- deadlines across downtime ----------------------------------------------------------------------


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def deadlines(ctx: Context, full: bool) -> Row:
    """Goals whose timeout passes while the operator is down fail Timeout at once after it starts; a
    retry whose backoff is running when the operator dies starts when the backoff ends, not before."""
    k = 10 if full else 3
    timeout_s, backoff_s = 12, 20
    started = time.monotonic()
    ns = ctx.namespace("deadlines")
    op = ctx.operator(ns, env={"OVERSEER_RETRY_BACKOFF_SECONDS": str(backoff_s)})
    world = ctx.world(ns, op)
    [agent] = start_agents(ctx, world, 1, 2 * k)
    timed = [f"timeout-{i}" for i in range(k)]
    retried = [f"retry-{i}" for i in range(k)]
    plan = {**{n: GoalPlan(hold=10**6) for n in timed}, **{n: GoalPlan(exits=[1, 0], hold=0.5) for n in retried}}
    ledger = PodLedger(ctx.k8s, ns).start()
    ctx.on_close(ledger.stop)
    kubelet = StandInKubelet(ctx.cluster, ctx.k8s, ns, plan).start()
    ctx.on_close(kubelet.stop)
    create_goals(ctx, ns, [goal_body(n, agent, timeout=f"{timeout_s}s") for n in timed]
                 + [goal_body(n, agent, retries=1) for n in retried])

    def state() -> dict[str, dict[str, Any]]:
        return {n: g.get("status") or {} for n, g in goals(ctx.k8s, ns).items()}
    wait_for(lambda: all(state().get(n, {}).get("phase") == "Running" for n in timed)
             and all(state().get(n, {}).get("retryAt") for n in retried), timeout=60,
             description="timed goals Running and retried goals waiting out their backoff")
    op.kill()
    killed = datetime.now(timezone.utc)
    seen = state()
    deadline = max(when(seen[n]["startedAt"]) for n in timed) + timedelta(seconds=timeout_s)
    retry_at = {n: when(seen[n]["retryAt"]) for n in retried}
    # Down past every timeout, and back before the backoffs end.
    time.sleep(max(0.0, (deadline - datetime.now(timezone.utc)).total_seconds()) + 2)
    back = datetime.now(timezone.utc)
    op.start()
    problems = [f"{n}: retry backoff already over at restart" for n, t in retry_at.items() if t <= back]
    late: list[float] = []
    wait_for(lambda: all(state().get(n, {}).get("phase") == "Failed" for n in timed), timeout=60,
             description="timed-out goals Failed after the restart")
    for n in timed:
        s = state()[n]
        late.append((when(s["completedAt"]) - back).total_seconds())
    wait_ended(ctx.k8s, ns, timed + retried, timeout=120)
    early: list[float] = []
    for n in retried:
        pods = ctx.k8s.core.list_namespaced_pod(ns, label_selector=f"overseer.dev/goal={n},overseer.dev/attempt=2")
        if not pods.items:
            problems.append(f"{n}: no second attempt")
            continue
        early.append((retry_at[n] - pods.items[0].metadata.creation_timestamp).total_seconds())
    if any(e > 1.0 for e in early):  # creationTimestamp has whole seconds
        problems.append(f"retries started before their retryAt by up to {max(early):.1f} s")
    if any(s > 10 for s in late):
        problems.append(f"Timeout reported {max(late):.1f} s after the restart")
    notes = [f"operator down {(back - killed).total_seconds():.0f} s across {k} timeouts of "
             f"{timeout_s} s and {k} backoffs of {backoff_s} s; Timeout reported {min(late):.1f}-{max(late):.1f} s "
             f"after the restart began (its start included); retries started {min(-e for e in early):.1f}-{max(-e for e in early):.1f} s "
             f"after their retryAt"] + problems
    row = row_from(ctx, ns, "deadlines across downtime",
                   f"{k} goals with timeout {timeout_s}s running and {k} goals in a {backoff_s} s retry backoff when "
                   "the operator is SIGKILLed; started again after the timeouts, before the backoffs end",
                   timed + retried, ledger, started, notes)
    if problems:
        raise ScenarioFailed(row)
    return row


class ScenarioFailed(Exception):
    """A promise other than lost and duplicate broke; the row says which."""

    def __init__(self, row: Row):
        super().__init__(row.notes)
        self.row = row


SCENARIOS: dict[str, Callable[[Context, bool], Row]] = {
    "operator-sigkill": operator_sigkill,
    "deadlines": deadlines,
    "leader-kill": leader_kill,
    "etcd-restart": etcd_restart,
    "load-10k": load,
    "apiserver-restart": apiserver_restart,  # last: the admission policies fail closed for a while after it
}
