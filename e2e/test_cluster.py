"""The harness gives a real cluster: scheduling, pod lifecycle, admission, garbage collection."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from e2e.harness import K8s, Kubectl, pod_phase, restricted_pod, wait_for

NODE = "kwok-node-0"


def _ready(k8s: K8s, node: str) -> bool:
    conditions = k8s.core.read_node(node).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_fake_node_is_ready(k8s: K8s, kubectl: Kubectl) -> None:
    wait_for(lambda: _ready(k8s, NODE), description=f"node {NODE} Ready")
    node = k8s.core.read_node(NODE)
    assert not node.spec.taints, "the fake node must accept ordinary pods"
    assert parse_quantity(node.status.allocatable["pods"]) >= 1000
    out = kubectl("get", "nodes", "-o", "name")
    assert f"node/{NODE}" in out.stdout.split()


def test_restricted_pod_runs_and_succeeds(k8s: K8s, namespace: str, exit_pod) -> None:
    k8s.core.create_namespaced_pod(namespace, restricted_pod("ok"))
    pod = wait_for(
        lambda: (p := k8s.core.read_namespaced_pod("ok", namespace)).spec.node_name and p,
        description="pod scheduled",
    )
    assert pod.spec.node_name == NODE
    wait_for(lambda: pod_phase(k8s, namespace, "ok") == "Running", description="pod Running")

    exit_pod(namespace, "ok", 0)

    wait_for(lambda: pod_phase(k8s, namespace, "ok") == "Succeeded", description="pod Succeeded")
    status = k8s.core.read_namespaced_pod("ok", namespace).status
    assert status.container_statuses[0].state.terminated.exit_code == 0


def test_pod_fails_with_exit_code(k8s: K8s, namespace: str, exit_pod) -> None:
    k8s.core.create_namespaced_pod(namespace, restricted_pod("bad-exit"))

    exit_pod(namespace, "bad-exit", 3)

    wait_for(lambda: pod_phase(k8s, namespace, "bad-exit") == "Failed", description="pod Failed")
    status = k8s.core.read_namespaced_pod("bad-exit", namespace).status
    terminated = status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"


def test_privileged_pod_is_rejected_by_pod_security(k8s: K8s, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1",
                                 "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(ApiException) as err:
        k8s.core.create_namespaced_pod(namespace, pod)
    assert err.value.status == 403
    assert "PodSecurity" in err.value.body
    assert "restricted" in err.value.body


def test_owner_deletion_garbage_collects_dependent(k8s: K8s, namespace: str) -> None:
    owner = k8s.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "b"})
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    k8s.core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref]), data={"x": "y"}),
    )

    k8s.core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            k8s.core.read_namespaced_config_map("dependent", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(dependent_gone, timeout=60, description="dependent ConfigMap garbage-collected")
