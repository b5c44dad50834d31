"""The scale benchmark: the operator's memory and CPU with many Goals present, at rest and
while goals keep finishing and new ones arrive (a soak).

    python -m e2e.bench.scale [--goals 10000] [--agents 100] [--slots 10] [--soak 3600]
                              [--churn 10] [--docs docs/performance.md] [--keep-cluster]

On the local control plane (started if needed): one namespace with A Agents of S slots each,
`overseer-operator --namespace NS` as a subprocess, then N Goals created at once. A*S goals run
(pods on kwok nodes), the rest wait Queued. Measured once the operator is idle: its RSS at rest.
Then, for the soak, C goals a second finish (their pods are annotated with an exit code, and
kwok reports them Succeeded), are deleted once Succeeded, and are replaced by new ones, so N
goals stay present and the queues keep moving. The operator's RSS is sampled every 10 s;
growth is the slope of a least-squares line through the second half of the samples.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e import harness
from e2e.bench.baseline_controller import AGENTS, GOALS, PODS, ApiError
from e2e.bench.docs import write_section
from e2e.bench.dispatch import (CLIENT_THREADS, Bench, agent_body, cpu_seconds, goal_body, log, machine,
                                memory_kb, settle)

from overseer.operator.pods import pod_name

EXIT_CODE = "overseer.dev/exit-code"  # e2e/cluster/manifests/kwok-exit-stages.yaml
SECTION_BEGIN = "<!-- scale:begin (written by python -m e2e.bench.scale --docs) -->"
SECTION_END = "<!-- scale:end -->"
RSS_TARGET_MB = 300


@dataclass
class ScaleResult:
    goals: int
    agents: int
    slots: int
    soak_s: float
    churn_per_s: float
    rss_empty_mb: float = 0.0            # Agents Ready, no goals
    placed_s: float | None = None        # until every goal was Running or Queued (the Agents' counts)
    rss_rest_mb: float = 0.0             # all goals placed, operator idle
    cpu_place_s: float = 0.0             # operator CPU to place the N goals
    rss_peak_mb: float = 0.0             # VmHWM at the end
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the soak, RSS MB)
    finished: int = 0                    # goals that succeeded and were replaced during the soak
    cpu_soak_s: float = 0.0
    growth_mb_per_h: float | None = None

    def slope(self) -> float | None:
        half = self.samples[len(self.samples) // 2:]
        if len(half) < 3:
            return None
        n = len(half)
        mx, my = sum(t for t, _ in half) / n, sum(m for _, m in half) / n
        var = sum((t - mx) ** 2 for t, _ in half)
        return None if var == 0 else sum((t - mx) * (m - my) for t, m in half) / var * 3600


def rss_mb(pid: int) -> float:
    return memory_kb(pid)["VmRSS"] / 1024


def placed(bench: Bench, ns: str) -> int:
    """Goals the operator has placed (Running or Queued), from the Agents' own status counts."""
    agents = bench.api.get(AGENTS.format(ns=ns))["items"]
    return sum(int((a.get("status") or {}).get("runningGoals") or 0) + int((a.get("status") or {}).get("queuedGoals") or 0)
               for a in agents)


def run(bench: Bench, n: int, agents: int, slots: int, soak: float, churn: float) -> ScaleResult:
    r = ScaleResult(n, agents, slots, soak, churn)
    ns = bench.namespace("scale", n)
    log(f"scale: namespace {ns}, {agents} agents x {slots} slots, {n} goals")
    names = [f"a-{i:03d}" for i in range(agents)]
    for a in names:
        bench.api.request("POST", AGENTS.format(ns=ns), agent_body(a, slots))
    operator = harness.OperatorProcess(bench.cluster, ns, bench.out_dir / f"operator-{ns}.log").start()
    try:
        pid = operator.pid
        assert pid is not None
        harness.wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in (a.get("status") or {}).get("conditions") or [])
                                     for a in bench.api.get(AGENTS.format(ns=ns))["items"]),
                         timeout=120, description="Agents Ready")
        settle(pid)
        r.rss_empty_mb = rss_mb(pid)
        cpu0 = cpu_seconds(pid)

        serial = iter(range(10**9))
        present: collections.deque[str] = collections.deque()

        def create() -> str:
            i = next(serial)
            name = f"g-{i:06d}"
            bench.api.request("POST", GOALS.format(ns=ns), goal_body(name, names[i % agents]))
            return name

        t0 = time.monotonic()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            present.extend(sorted(pool.map(lambda _: create(), range(n))))
        harness.wait_for(lambda: placed(bench, ns) >= n, timeout=max(300.0, n * 0.1), interval=2,
                         description=f"{n} goals Running or Queued")
        r.placed_s = time.monotonic() - t0
        settle(pid, quiet=2.0, limit=120)
        r.cpu_place_s = cpu_seconds(pid) - cpu0
        r.rss_rest_mb = rss_mb(pid)
        log(f"scale: {n} goals placed in {r.placed_s:.0f} s; RSS at rest {r.rss_rest_mb:.0f} MB")

        # The soak: finish the oldest running goals at `churn` per second, replace each finished one.
        cpu1, start = cpu_seconds(pid), time.monotonic()
        finishing: collections.deque[tuple[str, float]] = collections.deque()
        next_sample, budget = start, 0.0
        while time.monotonic() - start < soak:
            now = time.monotonic()
            if now >= next_sample:
                r.samples.append((round(now - start, 1), round(rss_mb(pid), 1)))
                next_sample += 10.0
            budget = min(budget + churn * 0.5, churn * 5)
            while budget >= 1 and present:
                goal = present[0]
                try:
                    bench.api.request("PATCH", f"{PODS.format(ns=ns)}/{pod_name(goal, 1)}",
                                      {"metadata": {"annotations": {EXIT_CODE: "0"}}},
                                      content_type="application/merge-patch+json")
                except ApiError as e:
                    if e.status != 404:
                        raise
                    break  # its pod is not there yet: the queue moves as finished goals free slots
                present.popleft()
                finishing.append((goal, now))
                budget -= 1
            while finishing and now - finishing[0][1] > 2.0:
                goal, _ = finishing[0]
                phase = ((bench.api.get(f"{GOALS.format(ns=ns)}/{goal}").get("status") or {}).get("phase"))
                if phase != "Succeeded":
                    break
                finishing.popleft()
                bench.api.request("DELETE", f"{GOALS.format(ns=ns)}/{goal}")
                present.append(create())
                r.finished += 1
            time.sleep(0.5)
        r.samples.append((round(time.monotonic() - start, 1), round(rss_mb(pid), 1)))
        r.cpu_soak_s = cpu_seconds(pid) - cpu1
        r.rss_peak_mb = memory_kb(pid)["VmHWM"] / 1024
        r.growth_mb_per_h = r.slope()
        log(f"scale: soak {soak:.0f} s, {r.finished} goals finished and replaced; RSS {r.samples[0][1]:.0f} -> "
            f"{r.samples[-1][1]:.0f} MB")
    finally:
        operator.stop()
        bench.delete_namespace(ns)
    return r


def render(r: ScaleResult, info: dict[str, Any], command: str) -> str:
    growth = "—" if r.growth_mb_per_h is None else f"{r.growth_mb_per_h:+.1f} MB/h"
    rss_ok = "meets the target" if max(r.rss_rest_mb, r.rss_peak_mb) < RSS_TARGET_MB else "**misses the target**"
    soak_rss = [m for _, m in r.samples]
    lines = [
        f"{info['date']}; {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM; Python {info['python']}; "
        f"`{command}`",
        "",
        f"| goals present | Agents × slots | RSS, no goals | placing {r.goals} goals: time, operator CPU | RSS at rest "
        f"| soak | goals finished and replaced | operator CPU / finished goal | RSS during the soak: first / last / "
        f"peak (VmHWM) | RSS growth, second half of the soak | |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r.goals} | {r.agents} × {r.slots} | {r.rss_empty_mb:.0f} MB | {r.placed_s or 0:.0f} s, "
        f"{r.cpu_place_s:.1f} s | {r.rss_rest_mb:.0f} MB | {r.soak_s / 60:.0f} min at {r.churn_per_s:g} goals/s | "
        f"{r.finished} | {1000 * r.cpu_soak_s / max(1, r.finished):.1f} ms | "
        f"{soak_rss[0] if soak_rss else 0:.0f} / {soak_rss[-1] if soak_rss else 0:.0f} / {r.rss_peak_mb:.0f} MB | "
        f"{growth} | {rss_ok} (under {RSS_TARGET_MB} MB) |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m e2e.bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--goals", type=int, default=10_000, help="goals present (default 10000)")
    p.add_argument("--agents", type=int, default=100, help="Agents (default 100)")
    p.add_argument("--slots", type=int, default=10, help="maxConcurrentGoals of each Agent (default 10)")
    p.add_argument("--soak", type=float, default=3600, metavar="SECONDS", help="soak length (default 3600)")
    p.add_argument("--churn", type=float, default=10, metavar="PER_SECOND",
                   help="goals finished and replaced per second during the soak (default 10)")
    p.add_argument("--docs", type=Path, help="write the table into this file's Scale section")
    p.add_argument("--json", type=Path, help="write the raw result here as JSON")
    p.add_argument("--keep-cluster", action="store_true", help="leave a cluster this run started running")
    args = p.parse_args(argv)
    command = "python -m e2e.bench.scale " + " ".join(argv)
    info = machine()
    out_dir = harness.cache_dir() / "bench" / ("scale-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"starting the control plane ({harness.control_plane_dir()}); logs and raw results in {out_dir}")
    cluster = harness.start_cluster()
    bench = Bench(cluster, args.agents, out_dir)
    try:
        harness.install_crds(bench.kubectl)
        bench.ensure_capacity(args.agents * args.slots + 100)
        result = run(bench, args.goals, args.agents, args.slots, args.soak, args.churn)
    finally:
        bench.remove_added_nodes()
        if cluster.started_here and not args.keep_cluster:
            log("stopping the control plane this run started")
            harness.stop_cluster()
    table = render(result, info, command)
    print(table)
    (out_dir / "result.json").write_text(json.dumps({"machine": info, "command": command,
                                                     "result": asdict(result)}, indent=1))
    if args.json:
        args.json.write_text((out_dir / "result.json").read_text())
    if args.docs:
        write_section(args.docs, "Scale", SECTION_BEGIN, SECTION_END, table)
        log(f"wrote the table into {args.docs}")
    return 0 if result.placed_s is not None and result.samples else 1


if __name__ == "__main__":
    sys.exit(main())
