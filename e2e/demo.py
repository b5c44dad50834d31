"""`make demo`: the local cluster, the CRDs, the operator, and the sample Agent, Capability
and Goals from manifests/samples/, watched until every Goal is done.

The agent runtime is not part of this release yet, so the demo plays the container's part:
each goal pod "exits 0" a few seconds after it starts running, and kwok reports it Succeeded
as a kubelet would. Everything else (dispatch, dependencies, status, events) is the real
operator on a real API server.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

from e2e import harness

NAMESPACE = "overseer-demo"
SAMPLES = harness.REPO / "manifests" / "samples"
WORK_SECONDS = 3.0  # how long each scripted pod "works" before it exits


def main() -> int:
    print("==> starting the local control plane (first build takes ~8 minutes)", flush=True)
    cluster = harness.start_cluster()
    kubectl = harness.Kubectl(cluster)
    k8s = harness.K8s(cluster)
    print(f"    API server {cluster.api_url}\n    export KUBECONFIG={cluster.kubeconfig}")

    print("==> installing the CRDs from crds/")
    harness.install_crds(kubectl)

    print(f"==> namespace {NAMESPACE} (Pod Security: restricted) and the API key Secret")
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=120)
    harness.create_namespace(k8s, NAMESPACE)
    key = os.environ.get("ANTHROPIC_API_KEY", "not-used-by-this-demo")
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic"},
        "data": {"api-key": base64.b64encode(key.encode()).decode()}}))

    log = harness.cache_dir() / "demo-operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    print(f"==> starting overseer-operator (log: {log})")
    op = harness.OperatorProcess(cluster, NAMESPACE, log).start()
    try:
        print(f"==> kubectl apply -f {SAMPLES.relative_to(harness.REPO)}/")
        print(kubectl("apply", "-n", NAMESPACE, "-f", str(SAMPLES)).stdout.rstrip())
        print("==> scripted agent: each goal pod exits 0 after %.0fs of \"work\"" % WORK_SECONDS)
        watch(kubectl, k8s)
        harness.wait_for(lambda: json.loads(kubectl("get", "agent", "coder", "-n", NAMESPACE, "-o", "json").stdout)
                         ["status"].get("succeededGoals") == 2, description="agent coder counting both goals")
        print("\n==> what the operator created for Agent coder")
        print(kubectl("get", "-n", NAMESPACE, "agents,capabilities,serviceaccount,role,rolebinding,"
                      "networkpolicy,resourcequota,pods").stdout.rstrip())
        print("\n==> events of Goal fix-ci")
        print(kubectl("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=fix-ci",
                      "--sort-by=.lastTimestamp").stdout.rstrip())
    finally:
        op.stop()
    print(f"\nThe cluster keeps running: export KUBECONFIG={cluster.kubeconfig}; stop it with make cluster-down")
    return 0


def watch(kubectl: harness.Kubectl, k8s: harness.K8s, timeout: float = 180) -> None:
    """Print `kubectl get goals` whenever it changes; finish running pods like their container would."""
    running_since: dict[str, float] = {}
    last: list[tuple[str, str | None]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        goals = json.loads(kubectl("get", "goals", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        phases = [(g.get("status") or {}).get("phase") for g in goals]
        seen = [(g["metadata"]["name"], p) for g, p in zip(goals, phases)]
        if seen != last:  # print the table when a phase moves, not when AGE ticks
            table = kubectl("get", "goals", "-n", NAMESPACE).stdout.rstrip()
            print(f"\n$ kubectl get goals -n {NAMESPACE}    # {time.strftime('%H:%M:%S')}\n{table}", flush=True)
            last = seen
        if goals and all(p in ("Succeeded", "Failed", "Cancelled") for p in phases):
            return
        pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        for pod in pods:
            name = pod["metadata"]["name"]
            if (pod.get("status") or {}).get("phase") == "Running" and \
                    harness.EXIT_CODE_ANNOTATION not in (pod["metadata"].get("annotations") or {}):
                since = running_since.setdefault(name, time.monotonic())
                if time.monotonic() - since >= WORK_SECONDS:
                    harness.exit_pod(k8s, NAMESPACE, name, 0)
        time.sleep(0.5)
    raise SystemExit(f"goals did not finish within {timeout:.0f}s; see kubectl describe goals -n {NAMESPACE}")


if __name__ == "__main__":
    sys.exit(main())
