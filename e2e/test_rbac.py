"""The operator works with nothing more than the ClusterRole in manifests/base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.harness import REPO, token_kubeconfig
from e2e.world import FAST, World


def operator_kubeconfig(cluster: Any, kubectl: Any, path: Path) -> Path:
    """A kubeconfig holding a token of the operator's own ServiceAccount (what it gets in a pod)."""
    token = kubectl("create", "token", "overseer-operator", "-n", "overseer-system", "--duration=1h").stdout.strip()
    return token_kubeconfig(cluster, token, path)


def test_operator_needs_only_its_cluster_role(cluster: Any, kubectl: Any, crds: Any, admission_policies: Any,
                                              namespace: str, operator: Any, exit_pod: Any, tmp_path: Path) -> None:
    kubectl("apply", "-k", str(REPO / "manifests" / "base"))
    config = operator_kubeconfig(cluster, kubectl, tmp_path / "operator.kubeconfig")
    # As deployed with several replicas: holding the Lease in overseer-system is part of the role.
    op = operator.start(namespace, "--leader-elect", "--leader-elect-namespace", "overseer-system",
                        env={**FAST, "KUBECONFIG": str(config)})
    world = World(namespace, kubectl, op, exit_pod)
    world.secret()
    world.capability("pytest")
    world.agent("coder", capabilities="[pytest]", quota='{pods: "4"}')
    world.wait_condition("agent", "coder", "Ready", "True")
    # It may read the admission policies it looks for, and finds them.
    world.wait_condition("agent", "coder", "AdmissionPolicies", "True", "PoliciesInstalled")
    for kind in ("serviceaccount", "role", "rolebinding", "networkpolicy", "resourcequota"):
        assert world.get(kind, "overseer-agent-coder"), f"{kind} not created under the operator's ClusterRole"
    world.goal("fix-ci")
    world.finish("fix-ci", 0)
    world.wait_phase("fix-ci", "Succeeded")
    world.goal("stop-me", extra="  cancel: true")
    world.wait_phase("stop-me", "Cancelled")
    log = op.log_text()
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    assert "holding Lease overseer-system/overseer-operator" in log
    assert op.stop() == 0 and "released Lease" in op.log_text()
