"""The operator's memory at a restart with many finished goals and their pods present: the state
the 10,000-goal chaos run ends in, where each SIGKILL is followed by a list of every goal and pod.

    python -m e2e.bench.restart_memory [--goals 10000] [--agents 100]
                                       [--operator PATH ...] [--rounds 2] [--keep-cluster]

On the local control plane (started if needed): N Goals in one namespace, and for each the pod
Overseer renders for its first attempt (owned by the goal, annotated to exit 0: kwok reports it
Succeeded). An operator started once records every goal Succeeded. Then each operator executable
given (default: this venv's) is started on that namespace, in turn and `--rounds` times: its RSS
(VmRSS) once its caches are filled (/readyz) and it is idle again, and its peak (VmHWM), then it
is SIGKILLed. Last, what this interpreter's operator code keeps of each goal and pod in its
caches (tracemalloc of the stores filled from one list of each), in bytes per object: run the
same command with another venv's python to read another version's figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from e2e import harness
from e2e.bench.baseline_controller import ApiError
from e2e.bench.dispatch import CLIENT_THREADS, Bench, agent_body, direct_pod, goal_body, log, memory_kb, settle

EXIT_CODE = "overseer.dev/exit-code"  # e2e/cluster/manifests/kwok-exit-stages.yaml
GOALS = "/apis/overseer.dev/v1alpha1/namespaces/{ns}/goals"
PODS = "/api/v1/namespaces/{ns}/pods"


def create(bench: Bench, ns: str, goals: int, agents: int) -> None:
    """The goals, then each one's first pod, owned by it."""
    bodies = {f"a-{i:03d}": agent_body(f"a-{i:03d}", 10) for i in range(agents)}
    for name in bodies:  # what an Agent's reconcile would make: its pods run as its ServiceAccount
        bench.api.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": f"overseer-agent-{name}"}})
    names = [(f"g-{i:05d}", f"a-{i % agents:03d}") for i in range(goals)]

    def one(item: tuple[str, str]) -> None:
        name, agent = item
        for attempt in range(5):
            try:
                goal = bench.api.request("POST", GOALS.format(ns=ns), goal_body(name, agent))
                break
            except ApiError as e:
                if e.status == 409:  # a retried create that had gone through
                    goal = bench.api.get(f"{GOALS.format(ns=ns)}/{name}")
                    break
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)
        pod = direct_pod(ns, name, bodies[agent])
        pod["metadata"]["ownerReferences"] = [{
            "apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": name,
            "uid": goal["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        pod["metadata"].setdefault("annotations", {})[EXIT_CODE] = "0"
        for attempt in range(5):
            try:
                bench.api.request("POST", PODS.format(ns=ns), pod)
                return
            except ApiError as e:
                if e.status == 409:
                    return
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        for i, _ in enumerate(pool.map(one, names), 1):
            if i % 1000 == 0:
                log(f"{i} goals and pods created")


def listed(bench: Bench, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        page = bench.api.get(url, limit=500, **({"continue": token} if token else {}))
        items.extend(page["items"])
        token = page["metadata"].get("continue") or ""
        if not token:
            return items


def succeeded(bench: Bench, ns: str) -> int:
    return sum(1 for g in listed(bench, GOALS.format(ns=ns)) if (g.get("status") or {}).get("phase") == "Succeeded")


def measure(cluster: harness.Cluster, ns: str, exe: Path, out_dir: Path) -> tuple[float, float, float]:
    """(seconds to /readyz, RSS idle after the fill, VmHWM) of one start of this operator."""
    op = harness.OperatorProcess(cluster, ns, out_dir / f"operator-{ns}.log", executable=exe, startup_timeout=120)
    start = time.monotonic()
    op.start()
    try:
        harness.wait_for(lambda: op.probe("/readyz")[0] == 200, timeout=900, interval=0.5,
                         description="the operator ready (caches filled)")
        ready = time.monotonic() - start
        assert op.pid is not None
        settle(op.pid, quiet=2.0, limit=300.0)
        mem = memory_kb(op.pid)
        return ready, mem["VmRSS"] / 1024, mem["VmHWM"] / 1024
    finally:
        op.kill()


def cached_bytes(bench: Bench, ns: str) -> tuple[float, float]:
    """Bytes per goal and per pod that this interpreter's operator code keeps in its stores: the
    memory the listed objects take once decoded, trimmed and filed, as the informer does."""
    import orjson

    from overseer.operator import runtime

    stores = runtime.new_stores()
    transforms = {"goals": runtime.slim_goal, "pods": runtime.slim_pod}
    out = []
    for kind, url, api_version, obj_kind in (("goals", GOALS, "overseer.dev/v1alpha1", "Goal"),
                                             ("pods", PODS, "v1", "Pod")):
        blobs = [orjson.dumps({"apiVersion": api_version, "kind": obj_kind, **raw})
                 for raw in listed(bench, url.format(ns=ns))]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for blob in blobs:
            stores[kind].upsert(transforms[kind](orjson.loads(blob)))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        out.append((after - before) / max(1, len(stores[kind])))
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m e2e.bench.restart_memory", description=__doc__.splitlines()[0])
    p.add_argument("--goals", type=int, default=10_000)
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--operator", type=Path, action="append", help="an overseer-operator executable (repeatable)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--namespace", help="measure this namespace of an earlier run (kept with --keep-cluster)")
    p.add_argument("--bytes-only", action="store_true", help="only the bytes per cached goal and pod")
    p.add_argument("--keep-cluster", action="store_true")
    args = p.parse_args()
    exes = args.operator or [harness.operator_executable()]
    out_dir = harness.cache_dir() / "restart-memory"
    out_dir.mkdir(parents=True, exist_ok=True)
    cluster = harness.start_cluster()
    bench = Bench(cluster, 0, out_dir)
    try:
        harness.install_crds(bench.kubectl)
        ns = args.namespace
        if ns is None:
            bench.ensure_capacity(1000)
            ns = bench.namespace("memory", args.goals)
            log(f"creating {args.goals} goals and their pods in {ns}")
            create(bench, ns, args.goals, args.agents)
            op = harness.OperatorProcess(cluster, ns, out_dir / f"operator-{ns}.log", executable=exes[-1],
                                         startup_timeout=120).start()
            try:
                harness.wait_for(lambda: succeeded(bench, ns) >= args.goals, timeout=3600, interval=15,
                                 description=f"{args.goals} goals Succeeded")
            finally:
                op.kill()
            log(f"{ns}: {args.goals} goals Succeeded with their pods (namespace kept: --namespace {ns})")
        if not args.bytes_only:
            for round_ in range(args.rounds):
                for exe in exes:
                    ready, rss, hwm = measure(cluster, ns, exe, out_dir)
                    print(f"round {round_ + 1}: {exe}: ready {ready:.0f} s after its start; RSS idle {rss:.0f} MB; "
                          f"peak (VmHWM) {hwm:.0f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
        goal_b, pod_b = cached_bytes(bench, ns)
        print(f"cached by this interpreter's operator code: {goal_b:,.0f} bytes per goal, {pod_b:,.0f} bytes per pod",
              flush=True)
    finally:
        if not args.keep_cluster:  # pods on a removed node are deleted: the namespace could not be measured again
            bench.remove_added_nodes()
            if cluster.started_here:
                harness.stop_cluster()


if __name__ == "__main__":
    main()
