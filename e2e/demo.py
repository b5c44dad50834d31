"""`make demo`: the local cluster, Overseer installed with the Helm chart (CRDs, operator
Deployment, RBAC), and the sample Agent, Capability and Goals from manifests/samples/, worked on by
the agent runtime until every Goal is done.

The chart is installed with its model gateway (gateway.enabled=true), its spend ledger in a local
PostgreSQL and its budget counters in a local Redis, both named to the chart by Secret, as a
user's cluster does. kwok runs no containers, so the demo plays the kubelet's part: for each pod
of the chart's operator and gateway Deployments it runs `overseer-operator` / `overseer-gateway`
locally with that pod's command, args, environment (Secrets included), ConfigMap volumes and
ServiceAccount token, the gateway's Service routed to them on loopback (e2e/chart.py); for each
goal pod `overseer-agent` likewise (e2e/agent_runner.py), whose ANTHROPIC_BASE_URL names that
Service.
With ANTHROPIC_API_KEY set, the agent calls Claude; without it, a scripted model stands in
(e2e/demo-scenario.yaml) and the demo says so. Either way only the gateway reads the key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from e2e import harness
from e2e.agent_runner import AgentRunner, ModelServer
from e2e.chart import (CHART, NAMESPACE as RELEASE_NAMESPACE, RELEASE, GatewayPods, OperatorPods, adopt_cluster_objects,
                       delete_kustomize_install, helm, leader_identity)
from overseer.operator.workspace import claim_name
from tests.support.servers import PostgresServer, RedisServer

NAMESPACE = "overseer-demo"
SAMPLES = harness.REPO / "manifests" / "samples"
SCENARIO = harness.REPO / "e2e" / "demo-scenario.yaml"
LEDGER_SECRET = "overseer-gateway-ledger"  # the chart's gateway.database.existingSecret
REDIS_SECRET = "overseer-gateway-redis"  # gateway.redis.existingSecret


def main() -> int:
    with contextlib.ExitStack() as running:  # what the demo started stops with it, also when it fails
        return demo(running)


def demo(running: contextlib.ExitStack) -> int:
    print("==> starting the local control plane (first build takes ~8 minutes)", flush=True)
    cluster = harness.start_cluster()
    kubectl = harness.Kubectl(cluster)
    k8s = harness.K8s(cluster)
    print(f"    API server {cluster.api_url}\n    export KUBECONFIG={cluster.kubeconfig}")

    print(f"==> namespace {NAMESPACE} (Pod Security: restricted) and the API key Secret")
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=120)
    harness.create_namespace(k8s, NAMESPACE)
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    workdir = Path(tempfile.mkdtemp(prefix="overseer-demo-"))
    model = None
    if not key:
        model = ModelServer(yaml.safe_load(SCENARIO.read_text()), workdir)
        running.callback(model.stop)
        print(f"==> ANTHROPIC_API_KEY is not set: a SCRIPTED model stands in for Claude at {model.url}")
        print(f"    (its answers come from {SCENARIO.relative_to(harness.REPO)}, not from a real model)")
        key = "scripted"
    secret(kubectl, NAMESPACE, "anthropic", {"api-key": key})

    print("==> PostgreSQL (the gateway's spend ledger) and Redis (its budget counters), named to the chart by Secret")
    if kubectl("get", "namespace", RELEASE_NAMESPACE, check=False).returncode != 0:
        harness.create_namespace(k8s, RELEASE_NAMESPACE)  # Pod Security restricted, as the README asks
    stores = Path(tempfile.mkdtemp(prefix="overseer-demo-stores-"))
    running.callback(shutil.rmtree, stores, ignore_errors=True)
    try:
        ledger = PostgresServer(stores).init()
    except RuntimeError as e:
        raise SystemExit(f"make demo needs PostgreSQL for the gateway's spend ledger ({e}); tests/prerequisites.sh "
                         "names the packages") from e
    running.callback(ledger.stop)
    counters = RedisServer(stores).start()
    running.callback(counters.stop)
    secret(kubectl, RELEASE_NAMESPACE, LEDGER_SECRET, {"url": ledger.dsn})
    secret(kubectl, RELEASE_NAMESPACE, REDIS_SECRET, {"url": counters.url})

    gateway_values = ["--set", "gateway.enabled=true", "--set", f"gateway.database.existingSecret={LEDGER_SECRET}",
                      "--set", f"gateway.redis.existingSecret={REDIS_SECRET}"]
    print(f"==> helm upgrade --install {RELEASE} charts/overseer -n {RELEASE_NAMESPACE} {' '.join(gateway_values)}\n"
          "    (CRDs, operator, RBAC, and the model gateway: the operator sends goal pods to its Service)")
    # CRDs from an earlier run are handed to the release
    takeover = ["--force-conflicts"] if adopt_cluster_objects(kubectl, RELEASE, RELEASE_NAMESPACE) else []
    installed = kubectl("get", "deployment", f"{RELEASE}-operator", "-n", RELEASE_NAMESPACE, "--ignore-not-found",
                        "-o", "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}").stdout
    if installed == "kustomize":  # make test applies manifests/base to this cluster
        print("    removing the kustomize install (manifests/base) an earlier make test left, CRDs kept")
        delete_kustomize_install(kubectl, "base")
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, *takeover, *gateway_values, "--wait",
         "--timeout", "120s", kubeconfig=cluster.kubeconfig)
    print(kubectl("get", "deployment,pods,services", "-n", RELEASE_NAMESPACE).stdout.rstrip())

    print(f"==> the chart's pods run as local processes, each with its Deployment's command, args, environment\n"
          f"    and ConfigMaps and a token of its ServiceAccount (logs: {workdir}/operator-*.log, gateway-*.log)")
    gateway = GatewayPods(cluster, k8s, RELEASE_NAMESPACE, workdir, release=RELEASE).start()
    running.callback(gateway.stop)
    op = OperatorPods(cluster, k8s, RELEASE_NAMESPACE, workdir, release=RELEASE).start()
    running.callback(op.stop)
    dns = gateway.service_urls(ready=2)
    for url, local in dns.items():
        print(f"    Service {url} -> {local} (loopback, to {len(gateway.running())} gateway replicas)")
    leader = harness.wait_for(lambda: next((p for p in op.running() if leader_identity(op.log(p))), None),
                              timeout=60, description="an operator replica holding the Lease")
    print(f"    {len(op.running())} operator replicas; {leader} holds the Lease overseer-operator and reconciles")
    runner = AgentRunner(cluster, k8s, NAMESPACE, workdir, cluster_dns=dns).start()
    running.callback(runner.stop)
    print(f"==> kubectl apply -f {SAMPLES.relative_to(harness.REPO)}/")
    docs = [d for f in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    if model is not None:  # set before the Agent exists: no goal pod may ever call the real API
        for doc in docs:
            if doc["kind"] == "Agent":
                doc["spec"]["model"]["baseURL"] = model.url
                print(f"    (Agent {doc['metadata']['name']} with spec.model.baseURL={model.url})")
    print(kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(docs)).stdout.rstrip())
    print(f"==> an agent process runs for each goal pod; each goal's workspace claim is a folder under "
          f"{runner.workdir / 'volumes' / NAMESPACE}")
    watch(kubectl)
    harness.wait_for(lambda: json.loads(kubectl("get", "agent", "coder", "-n", NAMESPACE, "-o", "json").stdout)
                     ["status"].get("succeededGoals") == 2, description="agent coder counting both goals")
    print("\n==> what the operator created for Agent coder")
    print(kubectl("get", "-n", NAMESPACE, "agents,capabilities,serviceaccount,role,rolebinding,"
                  "networkpolicy,resourcequota,pods").stdout.rstrip())
    print("\n==> events of Goal fix-ci")
    print(kubectl("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=fix-ci",
                  "--sort-by=.lastTimestamp").stdout.rstrip())
    for goal in ("setup-repo", "fix-ci"):
        result = kubectl("get", "goal", goal, "-n", NAMESPACE, "-o", "jsonpath={.status.result}").stdout
        print(f"\n==> {goal} reported: {result}")
    show_cost(kubectl, ledger)
    print("\n==> the goals' workspace claims (fix-ci started from a copy of setup-repo's)")
    print(kubectl("get", "persistentvolumeclaims", "-n", NAMESPACE).stdout.rstrip())
    for f in sorted(runner.claim_folder(claim_name("fix-ci")).glob("*.py")):
        print(f"--- {f.name}\n{f.read_text().rstrip()}")
    print(f"\nThe cluster keeps running: export KUBECONFIG={cluster.kubeconfig}; stop it with make cluster-down")
    return 0


def secret(kubectl: harness.Kubectl, namespace: str, name: str, data: dict[str, str]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))


def show_cost(kubectl: harness.Kubectl, ledger: PostgresServer) -> None:
    """Each goal's cost as its status says (written by the gateway) beside the ledger's rows."""
    def goals() -> list[dict[str, Any]]:
        return json.loads(kubectl("get", "goals", "-n", NAMESPACE, "-o", "json").stdout)["items"]

    harness.wait_for(lambda: all((g.get("status") or {}).get("cost") for g in goals()), description="cost in status")
    with psycopg.connect(ledger.dsn) as conn:
        rows = dict(((uid, (calls, usd)) for uid, calls, usd in conn.execute(
            "SELECT goal_uid, count(*), sum(cost_usd) FROM gateway_spend WHERE namespace = %s GROUP BY 1",
            (NAMESPACE,))))
    print("\n==> what it cost: status.cost (the gateway writes it) and the gateway's spend ledger (PostgreSQL)")
    print(kubectl("get", "-n", NAMESPACE, "goals,agents").stdout.rstrip())
    print(f"{'GOAL':<12} {'STATUS.COST.USD':>16} {'CALLS':>6} {'LEDGER USD':>11} {'LEDGER ROWS':>12}")
    for g in goals():
        cost = g["status"]["cost"]
        calls, usd = rows.get(g["metadata"]["uid"], (0, 0))
        print(f"{g['metadata']['name']:<12} {cost['usd']:>16.6f} {cost.get('requests', 0):>6} {float(usd):>11.6f} {calls:>12}")
    if not rows:
        raise SystemExit("the spend ledger has no row: the goal pods did not call the model through the gateway")


def watch(kubectl: harness.Kubectl, timeout: float = 300) -> None:
    """Print `kubectl get goals` whenever a goal's phase or progress moves, until all are done."""
    last: list[tuple[str, Any, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        goals = json.loads(kubectl("get", "goals", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        seen = [(g["metadata"]["name"], (g.get("status") or {}).get("phase"), (g.get("status") or {}).get("iteration"))
                for g in goals]
        if seen != last:  # print the table when something moves, not when AGE ticks
            table = kubectl("get", "goals", "-n", NAMESPACE).stdout.rstrip()
            print(f"\n$ kubectl get goals -n {NAMESPACE}    # {time.strftime('%H:%M:%S')}\n{table}", flush=True)
            last = seen
        if goals and all(phase in ("Succeeded", "Failed", "Cancelled") for _, phase, _ in seen):
            return
        time.sleep(0.5)
    raise SystemExit(f"goals did not finish within {timeout:.0f}s; see kubectl describe goals -n {NAMESPACE}")


if __name__ == "__main__":
    sys.exit(main())
