"""The operator's probes on a real API server: /readyz waits for every cache (and says which
one it cannot fill), /healthz stays 200 while it waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.harness import token_kubeconfig, wait_for

ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: limited-operator}}
rules:
- {{apiGroups: [overseer.dev], resources: [agents, capabilities, goals], verbs: [get, list, watch]}}
- {{apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch]}}
- {{apiGroups: [""], resources: [persistentvolumeclaims, configmaps], verbs: [list, watch]}}
{extra}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: limited-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: limited-operator}}
subjects: [{{kind: ServiceAccount, name: limited-operator}}]
"""


def test_readyz_waits_for_every_cache_and_names_the_one_it_cannot_fill(cluster: Any, kubectl: Any, crds: Any,
                                                                       namespace: str, operator: Any,
                                                                       tmp_path: Path) -> None:
    # An operator whose account may not list pods can never fill its pod cache.
    kubectl("create", "serviceaccount", "limited-operator", "-n", namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=ROLE.format(extra=""))
    token = kubectl("create", "token", "limited-operator", "-n", namespace, "--duration=1h").stdout.strip()
    config = token_kubeconfig(cluster, token, tmp_path / "limited.kubeconfig")
    # (The API server's addresses given, it needs no EndpointSlices from namespace default.)
    op = operator.start(namespace, env={"KUBECONFIG": str(config), "OVERSEER_API_SERVER_CIDRS": '["192.0.2.1/32"]'})

    # The other caches fill meanwhile (on a busy machine some only after the refusal is first named),
    # until the pods' is the one left.
    pods = f"caches not filled: Informer(pods in {namespace}, overseer.dev/goal): "
    status, reason = wait_for(lambda: r if (r := op.probe("/readyz"))[1].startswith(pods) else None,
                              description="/readyz naming only the cache it cannot fill")
    assert status == 503
    assert "403 Forbidden" in reason and "Informer(goals" not in reason
    assert op.probe("/healthz") == (200, "ok"), "refused by the API server is not wedged: a restart would not help"

    # Granted what it lacked, it fills the cache on its next try and becomes ready.
    kubectl("apply", "-n", namespace, "-f", "-",
            input=ROLE.format(extra='- {apiGroups: [""], resources: [pods], verbs: [list, watch]}'))
    wait_for(lambda: op.probe("/readyz") == (200, "ok"), timeout=60, description="/readyz once pods can be listed")
    assert op.probe("/healthz") == (200, "ok")
