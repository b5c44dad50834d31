"""What the model gateway adds to a streamed model call (make bench-gateway).

The scripted model and the gateway run as their own processes, the gateway as in production: it
reviews a real pod-bound token with the local API server (once: then it is cached) and reads the
Agent and its key Secret from it, and the Goal has a money budget, so every call is held in Redis
before it is forwarded, settled after, written to the PostgreSQL ledger and into the Goal's status. The model streams as a generating model does: its first
event after `--first-token` seconds, the next ones `--event-interval` apart. One client process
keeps `--concurrency` streams in flight directly to the model and as many through the gateway, at
the same time, so both paths see the same machine at the same moments; the streams start spread
over one call's length, so calls arrive steadily, not in bursts. For each path: latency to
the last byte and to the first byte, p50 and p99; for the gateway its CPU seconds per request and
its memory.

`--variant NOTE:NAME=VALUE[,...]` runs one more gateway with that environment (e.g. an older
checkout on PYTHONPATH) as one more path at the same time, with its own `--concurrency` streams,
so a change is measured against what came before on the same machine at the same moments.

    python -m e2e.bench.gateway [--requests 1000] [--concurrency 100] [--first-token 0.5]
                                [--event-interval 0.25] [--variant NOTE:NAME=VALUE[,...]]
                                [--docs FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from e2e import harness
from e2e.bench.docs import write_section
from e2e.gateway import GatewayProcess, gateway_kubeconfig, pod_token
from tests.support.servers import PostgresServer, RedisServer

NAMESPACE = "bench-gateway"
MODEL = "claude-sonnet-5-5"
REPLY = "The parser splits on tabs; the failing test expects commas too. " * 4
BEGIN, END = "<!-- bench-gateway:begin -->", "<!-- bench-gateway:end -->"
TICKS = os.sysconf("SC_CLK_TCK")
EVENTS_APART = 8  # the reply streams as nine events: message_start ... message_stop


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def runqueue_seconds(pid: int) -> float:
    """How long the process's main thread (the gateway's event loop) waited for a CPU, all told."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def autogroup_nice() -> int | None:
    """The nice value of this session's scheduling group: with kernel.sched_autogroup_enabled, CPU is
    shared between sessions first and a process's own nice acts only inside its session."""
    try:
        return int(Path("/proc/self/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.M)}
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


class Model:
    """overseer-scripted-model as a process, answering every request with the same reply."""

    def __init__(self, workdir: Path, first_token: float, event_interval: float) -> None:
        scenario = workdir / "scenario.yaml"
        turn = {"reply": REPLY, "delay": first_token, "event_interval": event_interval}
        scenario.write_text(yaml.safe_dump({"conversations": {"default": [turn]}, "repeat_last": True}))
        exe = Path(sys.executable).parent / "overseer-scripted-model"
        self.proc = subprocess.Popen([str(exe), "--scenario", str(scenario)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            raise RuntimeError(f"scripted model did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def goal_pod(kubectl: harness.Kubectl, k8s: harness.K8s, model_url: str) -> str:
    """An Agent on the scripted model, a Goal and its pod, as the operator would make them; the pod's token."""
    harness.delete_namespace(k8s, NAMESPACE)
    harness.wait_for(lambda: k8s.core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items == [],
                     timeout=120, description=f"namespace {NAMESPACE} gone")
    harness.create_namespace(k8s, NAMESPACE)
    kubectl("create", "secret", "generic", "anthropic", "-n", NAMESPACE, "--from-literal=api-key=bench-key")
    kubectl("create", "serviceaccount", "overseer-agent-bench", "-n", NAMESPACE)
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: bench}}
spec:
  model: {{name: {MODEL}, baseURL: "{model_url}", apiKeySecretRef: {{name: anthropic, key: api-key}}}}
---
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {{name: bench}}
spec: {{description: benchmark, agentRef: {{name: bench}}, budget: {{maxCostPerGoal: 1000000}}}}
""")
    goal = json.loads(kubectl("get", "goal", "bench", "-n", NAMESPACE, "-o", "json").stdout)
    pod = harness.restricted_pod("bench-a1", serviceAccountName="overseer-agent-bench")
    pod["metadata"].update(labels={"overseer.dev/goal": "bench", "overseer.dev/agent": "bench"}, ownerReferences=[{
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "bench",
        "uid": goal["metadata"]["uid"], "controller": True}])
    k8s.core.create_namespaced_pod(NAMESPACE, pod)
    return pod_token(k8s, NAMESPACE, "bench-a1", seconds=3600)


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> tuple[float, float]:
    """(seconds to the first byte of the body, seconds to the last) of one streamed call."""
    started = time.perf_counter()
    first = 0.0
    async with session.post(url + "/v1/messages", data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
        async for _ in resp.content.iter_any():
            if not first:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def batch(url: str, headers: dict[str, str], requests: int, concurrency: int,
                spread: float = 0.0) -> list[tuple[float, float]]:
    """`requests` calls, `concurrency` at a time. The workers start spread over `spread` seconds,
    as independent agents would, not all in one millisecond: identical calls would then arrive in
    bursts of `concurrency` for the whole run, and every burst would queue on one core."""
    body = json.dumps({"model": MODEL, "max_tokens": 256, "stream": True,
                       "messages": [{"role": "user", "content": "Why does test_parser fail?"}]}).encode()
    connector = aiohttp.TCPConnector(limit=concurrency)
    results: list[tuple[float, float]] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(requests))

        async def worker(i: int) -> None:
            await asyncio.sleep(spread * i / concurrency)
            for _ in queue:
                results.append(await one(session, url, headers, body))

        await asyncio.gather(*[worker(i) for i in range(concurrency)])
    return results


def gateway_figures(proc: GatewayProcess, cpu: float, waited: float, requests: int) -> dict[str, float]:
    rss, peak = memory_mb(proc.proc.pid)
    return {"cpu_ms_per_request": cpu / requests * 1000, "cpu_wait_ms_per_request": waited / requests * 1000,
            "rss_mb": rss, "rss_peak_mb": peak}


async def measure(model_url: str, gateways: dict[str, GatewayProcess], token: str, requests: int, concurrency: int,
                  call_seconds: float) -> dict[str, Any]:
    """`gateways`: "gateway" (this checkout) and one per variant, each its own path beside the direct one."""
    paths = {"direct": (model_url, {"x-api-key": "bench-key", "content-type": "application/json"})}
    paths |= {name: (g.url, {"x-api-key": token, "content-type": "application/json"}) for name, g in gateways.items()}
    # warm up: connections, the token review, the caches
    await asyncio.gather(*[batch(url, headers, concurrency, concurrency) for url, headers in paths.values()])
    load_before = os.getloadavg()[0]
    before = {name: (cpu_seconds(g.proc.pid), runqueue_seconds(g.proc.pid)) for name, g in gateways.items()}
    runs = await asyncio.gather(*[batch(url, headers, requests, concurrency, call_seconds)
                                  for url, headers in paths.values()])
    used = {name: (cpu_seconds(g.proc.pid) - before[name][0], runqueue_seconds(g.proc.pid) - before[name][1])
            for name, g in gateways.items()}
    out: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "load_average": os.getloadavg()[0],
                           "load_average_before": load_before, "variants": [n for n in gateways if n != "gateway"]}
    for name, values in zip(paths, runs, strict=True):
        firsts, totals = [v[0] for v in values], [v[1] for v in values]
        out[name] = {"p50_ms": pct(totals, 0.5) * 1000, "p99_ms": pct(totals, 0.99) * 1000,
                     "ttfb_p50_ms": pct(firsts, 0.5) * 1000, "ttfb_p99_ms": pct(firsts, 0.99) * 1000}
    for name, g in gateways.items():
        added = {k: out[name][k] - out["direct"][k] for k in out["direct"]}
        figures = gateway_figures(g, *used[name], requests)
        if name == "gateway":
            out["added"] = added
            out.update({f"gateway_{k}": v for k, v in figures.items()})
        else:
            out[name] |= {"added": added, **figures}
    return out


def table(r: dict[str, Any]) -> str:
    rows = [("direct", r["direct"]), ("through the gateway", r["gateway"]), ("added by the gateway", r["added"])]
    for note in r.get("variants", []):
        rows += [(f"through the gateway ({note})", r[note]), (f"added by the gateway ({note})", r[note]["added"])]
    lines = [f"{r['requests']} streamed calls per path, {r['concurrency']} in flight on each path at once, "
             f"first event after {r['first_token_s']} s, then one every {r['event_interval_s']} s; "
             f"{os.cpu_count()} cores (load average {r['load_average_before']:.1f} at the start, "
             f"{r['load_average']:.1f} at the end); model, gateway and client on one machine, the client and "
             f"model at nice {r['bench_nice']}, the gateway at nice {r['gateway_nice']}"
             + (f", in a session (autogroup) at nice {r['autogroup_nice']}" if r.get("autogroup_nice") is not None
                else "") + "\n",
             "| path | p50 | p99 | first byte p50 | first byte p99 |", "|---|---|---|---|---|"]
    for name, v in rows:
        lines.append(f"| {name} | {v['p50_ms']:.2f} ms | {v['p99_ms']:.2f} ms | {v['ttfb_p50_ms']:.2f} ms | "
                     f"{v['ttfb_p99_ms']:.2f} ms |")
    lines.append(f"\ngateway CPU per call: {r['gateway_cpu_ms_per_request']:.3f} ms; time it waited for a CPU "
                 f"(other work on the machine) per call: {r['gateway_cpu_wait_ms_per_request']:.3f} ms; "
                 f"gateway memory: {r['gateway_rss_mb']:.0f} MB RSS (peak {r['gateway_rss_peak_mb']:.0f} MB)")
    for note in r.get("variants", []):
        v = r[note]
        lines.append(f"gateway ({note}): CPU per call {v['cpu_ms_per_request']:.3f} ms, waited for a CPU "
                     f"{v['cpu_wait_ms_per_request']:.3f} ms per call, {v['rss_mb']:.0f} MB RSS")
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    note, _, assignments = text.partition(":")
    pairs = [a.partition("=") for a in assignments.split(",") if a]
    if not note or not pairs or any(not name or not eq for name, eq, _ in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NOTE:NAME=VALUE[,NAME=VALUE...], "
                                         "e.g. before:PYTHONPATH=/tmp/old/operator")
    return note, {name: value for name, _, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="calls per path")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--first-token", type=float, default=0.5, help="seconds before the model's first event")
    parser.add_argument("--event-interval", type=float, default=0.25, help="seconds between the model's events")
    parser.add_argument("--gateway-nice", type=int, help="run the gateway at this nice value (an experiment: how much "
                        "of what it adds is waiting for a CPU behind other work)")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        metavar="NOTE:NAME=VALUE[,NAME=VALUE...]",
                        help="also run a gateway with this environment as a path of its own at the same time, "
                             "e.g. before:PYTHONPATH=/tmp/old/operator for the gateway of an older checkout")
    parser.add_argument("--docs", type=Path, help="write the table into this file's gateway block")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    cluster = harness.start_cluster()
    kubectl, k8s = harness.Kubectl(cluster), harness.K8s(cluster)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    model = postgres = redis = None
    gateways: dict[str, GatewayProcess] = {}
    try:
        harness.install_crds(kubectl)
        # A kept cluster holds the admission policies; after a restart the API server refuses Goals
        # until it has resolved their paramKind again (up to two minutes).
        harness.wait_for(lambda: harness.policies_configured(kubectl), timeout=240,
                         description="the API server to resolve the policies' paramKind (Agent)")
        postgres, redis = PostgresServer(workdir).init(), RedisServer(workdir).start()
        model = Model(workdir, args.first_token, args.event_interval)
        token = goal_pod(kubectl, k8s, model.url)
        kubeconfig = gateway_kubeconfig(cluster, kubectl, k8s, workdir / "gw.kubeconfig")
        env = {"OVERSEER_GATEWAY_DATABASE_URL": postgres.dsn, "OVERSEER_GATEWAY_REDIS_URL": redis.url}
        for note, extra in [("gateway", {}), *args.variant]:
            gateways[note] = GatewayProcess(cluster, kubeconfig, workdir / f"gateway-{len(gateways)}.log",
                                            env=env | extra)
            if args.gateway_nice is not None:
                os.setpriority(os.PRIO_PROCESS, gateways[note].proc.pid, args.gateway_nice)
        log(f"model {model.url}, gateways {', '.join(g.url for g in gateways.values())}: "
            f"{args.requests} calls per path")
        call_seconds = args.first_token + EVENTS_APART * args.event_interval
        result = asyncio.run(measure(model.url, gateways, token, args.requests, args.concurrency, call_seconds))
        result.update(first_token_s=args.first_token, event_interval_s=args.event_interval,
                      gateway_nice=os.getpriority(os.PRIO_PROCESS, 0) if args.gateway_nice is None else args.gateway_nice,
                      bench_nice=os.getpriority(os.PRIO_PROCESS, 0), autogroup_nice=autogroup_nice())
    finally:
        for gateway in gateways.values():
            gateway.stop()
        if model is not None:
            model.stop()
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        harness.delete_namespace(k8s, NAMESPACE)
        k8s.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if cluster.started_here:
            harness.stop_cluster()
    text = table(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.docs:
        command = (f"make bench-gateway (python -m e2e.bench.gateway --requests {args.requests} "
                   f"--concurrency {args.concurrency} --first-token {args.first_token} "
                   f"--event-interval {args.event_interval}"
                   + "".join(f" --variant {note}:..." for note, _ in args.variant) + ")")
        write_section(args.docs, "Model gateway", BEGIN, END, f"`{command}`\n\n{text}")


if __name__ == "__main__":
    main()
