"""`make demo`: the local cluster, Overseer installed with the Helm chart (CRDs, operator
Deployment, RBAC), and the sample Agent, Capability and Goals from manifests/samples/, worked on by
the agent runtime until every Goal is done.

kwok runs no containers, so the demo plays the kubelet's part: for each pod of the chart's
operator Deployment it runs `overseer-operator` locally with that pod's args, environment and
ServiceAccount token (e2e/chart.py), and for each goal pod `overseer-agent` likewise
(e2e/agent_runner.py).
With ANTHROPIC_API_KEY set, the agent calls Claude; without it, a scripted model stands in
(e2e/demo-scenario.yaml) and the demo says so. Either way the goal pods reach the model through
overseer-gateway, which alone reads the key, with a spend ledger in a local PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from e2e import harness
from e2e.agent_runner import AgentRunner, ModelServer
from e2e.chart import (CHART, NAMESPACE as RELEASE_NAMESPACE, RELEASE, OperatorPods, adopt_cluster_objects, delete_kustomize_install,
                       helm, leader_identity)
from e2e.gateway import GatewayProcess, gateway_kubeconfig
from overseer.operator.workspace import claim_name
from tests.support.servers import PostgresServer

NAMESPACE = "overseer-demo"
SAMPLES = harness.REPO / "manifests" / "samples"
SCENARIO = harness.REPO / "e2e" / "demo-scenario.yaml"


def main() -> int:
    print("==> starting the local control plane (first build takes ~8 minutes)", flush=True)
    cluster = harness.start_cluster()
    kubectl = harness.Kubectl(cluster)
    k8s = harness.K8s(cluster)
    print(f"    API server {cluster.api_url}\n    export KUBECONFIG={cluster.kubeconfig}")

    print(f"==> helm upgrade --install {RELEASE} charts/overseer -n {RELEASE_NAMESPACE} (CRDs, operator, RBAC)")
    if kubectl("get", "namespace", RELEASE_NAMESPACE, check=False).returncode != 0:
        harness.create_namespace(k8s, RELEASE_NAMESPACE)  # Pod Security restricted, as the README asks
    # CRDs from an earlier run are handed to the release
    takeover = ["--force-conflicts"] if adopt_cluster_objects(kubectl, RELEASE, RELEASE_NAMESPACE) else []
    installed = kubectl("get", "deployment", f"{RELEASE}-operator", "-n", RELEASE_NAMESPACE, "--ignore-not-found",
                        "-o", "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}").stdout
    if installed == "kustomize":  # make test applies manifests/base to this cluster
        print("    removing the kustomize install (manifests/base) an earlier make test left, CRDs kept")
        delete_kustomize_install(kubectl, "base")
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, *takeover, "--wait",
         "--timeout", "120s", kubeconfig=cluster.kubeconfig)
    print(kubectl("get", "deployment,pods", "-n", RELEASE_NAMESPACE).stdout.rstrip())

    print(f"==> namespace {NAMESPACE} (Pod Security: restricted) and the API key Secret")
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=120)
    harness.create_namespace(k8s, NAMESPACE)
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    workdir = Path(tempfile.mkdtemp(prefix="overseer-demo-"))
    model = None
    if not key:
        model = ModelServer(yaml.safe_load(SCENARIO.read_text()), workdir)
        print(f"==> ANTHROPIC_API_KEY is not set: a SCRIPTED model stands in for Claude at {model.url}")
        print(f"    (its answers come from {SCENARIO.relative_to(harness.REPO)}, not from a real model)")
        key = "scripted"
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic"},
        "data": {"api-key": base64.b64encode(key.encode()).decode()}}))

    print("==> starting PostgreSQL (the gateway's spend ledger) and overseer-gateway, which alone reads the key")
    try:
        ledger: PostgresServer | None = PostgresServer(Path(tempfile.mkdtemp(prefix="overseer-demo-pg-"))).init()
    except RuntimeError as e:
        print(f"    no PostgreSQL ({e}): the gateway runs without a ledger, so no cost and no budgets")
        ledger = None
    env = {"OVERSEER_GATEWAY_DATABASE_URL": ledger.dsn, "OVERSEER_GATEWAY_STATUS_INTERVAL_SECONDS": "0.5"} if ledger else {}
    gateway = GatewayProcess(cluster, gateway_kubeconfig(cluster, kubectl, k8s, workdir / "gateway.kubeconfig"),
                             harness.cache_dir() / "demo-gateway.log", env=env)
    print(f"    gateway {gateway.url} (log: {gateway.log}); goal pods get a token for it, not the key")
    print(f"==> helm upgrade {RELEASE} --reuse-values: the operator sends goal pods to the gateway (extraEnv)")
    helm("upgrade", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, "--reuse-values", "--wait", "--timeout", "120s",
         "--set-json", "extraEnv=" + json.dumps([{"name": "OVERSEER_GATEWAY_URL", "value": gateway.url}]),
         kubeconfig=cluster.kubeconfig)

    print(f"==> the operator's pods run as local processes, with the Deployment's args and environment and a token\n"
          f"    of ServiceAccount {RELEASE_NAMESPACE}/{RELEASE}-operator (logs: {workdir}/operator-*.log)")
    op = OperatorPods(cluster, k8s, RELEASE_NAMESPACE, workdir, release=RELEASE).start()
    leader = harness.wait_for(lambda: next((p for p in op.running() if leader_identity(op.log(p))), None),
                              timeout=60, description="an operator replica holding the Lease")
    print(f"    {len(op.running())} replicas; {leader} holds the Lease overseer-operator and reconciles")
    runner = AgentRunner(cluster, k8s, NAMESPACE, workdir).start()
    try:
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
        if ledger is not None:
            harness.wait_for(lambda: all((g.get("status") or {}).get("cost") for g in json.loads(
                kubectl("get", "goals", "-n", NAMESPACE, "-o", "json").stdout)["items"]), description="cost in status")
            print("\n==> what it cost, from the gateway's spend ledger (status.cost)")
            print(kubectl("get", "-n", NAMESPACE, "goals,agents").stdout.rstrip())
        print("\n==> the goals' workspace claims (fix-ci started from a copy of setup-repo's)")
        print(kubectl("get", "persistentvolumeclaims", "-n", NAMESPACE).stdout.rstrip())
        for f in sorted(runner.claim_folder(claim_name("fix-ci")).glob("*.py")):
            print(f"--- {f.name}\n{f.read_text().rstrip()}")
    finally:
        runner.stop()
        op.stop()
        gateway.stop()
        if ledger is not None:
            ledger.stop()
            shutil.rmtree(ledger.dir.parent, ignore_errors=True)
        if model is not None:
            model.stop()
    print(f"\nThe cluster keeps running: export KUBECONFIG={cluster.kubeconfig}; stop it with make cluster-down")
    return 0


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
