"""What a goal pod can reach, and who can reach it, under the NetworkPolicy the operator writes,
as an enforcing network plugin would judge it: cyclonus's policy engine (e2e/netpol.py) reads the
live policies, namespaces and pods from the API server and answers a truth table of flows. No
packet is sent anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import harness
from e2e.harness import wait_for
from e2e.netpol import Flow, verdicts
from e2e.world import FAST, World

METRICS_PORT = 9090
GATEWAY_PORT = 8080
CAPABILITY_CIDR = "198.51.100.0/24"  # TEST-NET-2: declared by the capability, never contacted


@pytest.fixture
def neighbours(request: pytest.FixtureRequest, k8s: harness.K8s) -> Iterator[dict[str, str]]:
    """Three more namespaces: infra (DNS, PostgreSQL, Redis, gateway and a pod that only looks
    like a server), monitoring (the scraper) and other (a scraper lookalike)."""
    base = harness.dns_name(request.node.name, prefix="e2e-np-", max_len=50)
    names = {role: f"{base}-{role}" for role in ("infra", "mon", "other")}
    for name in names.values():
        harness.create_namespace(k8s, name)
    yield names
    for name in names.values():
        harness.delete_namespace(k8s, name)


def fake_pod(kubectl: harness.Kubectl, namespace: str, name: str, labels: dict[str, str],
             ports: list[tuple[int, str]]) -> str:
    """A pod the fake node runs (it gets an address, nothing listens): "namespace/name"."""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": "registry.k8s.io/pause:3.10",
                "ports": [{"containerPort": port, "protocol": proto} for port, proto in ports],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    return f"{namespace}/{name}"


def pod_ip(kubectl: harness.Kubectl, ref: str) -> str:
    namespace, name = ref.split("/")
    def ip() -> str | None:
        got = json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
        return (got.get("status") or {}).get("podIP")
    return wait_for(ip, timeout=60, description=f"an address for pod {ref}")


def api_server_endpoint(kubectl: harness.Kubectl) -> tuple[str, int]:
    """The address and port the API server publishes in EndpointSlice default/kubernetes."""
    [published] = json.loads(kubectl("get", "endpointslices", "-n", "default", "-l",
                                     "kubernetes.io/service-name=kubernetes", "-o", "json").stdout)["items"]
    return published["endpoints"][0]["addresses"][0], published["ports"][0]["port"]


def start_world(namespace: str, kubectl: harness.Kubectl, operator: Any, exit_pod: Any, env: dict[str, str]) -> World:
    op = operator.start(namespace, env={**FAST, **env})
    world = World(namespace, kubectl, op, exit_pod)
    world.secret()
    return world


def test_a_goal_pod_reaches_what_its_agent_needs_and_nothing_else(
        namespace: str, kubectl: harness.Kubectl, crds: Any, admission_policies: Any, operator: Any,
        exit_pod: Any, neighbours: dict[str, str]) -> None:
    infra, mon, other = neighbours["infra"], neighbours["mon"], neighbours["other"]
    world = start_world(namespace, kubectl, operator, exit_pod, {
        "OVERSEER_DNS_NAMESPACE": infra, "OVERSEER_DNS_POD_LABELS": '{"k8s-app": "kube-dns"}',
        "OVERSEER_KNOWLEDGE_EGRESS": json.dumps({"namespace": infra, "podLabels": {"app": "postgresql"},
                                                 "ports": [5432]}),
        "OVERSEER_REDIS_EGRESS": json.dumps({"namespace": infra, "podLabels": {"app": "redis"}, "ports": [6379]}),
        "OVERSEER_GATEWAY_URL": "http://overseer-gateway.example:80", "OVERSEER_GATEWAY_NAMESPACE": infra,
        "OVERSEER_GATEWAY_POD_PORT": str(GATEWAY_PORT),
        "OVERSEER_MONITORING_NAMESPACE": mon, "OVERSEER_MONITORING_POD_LABELS": '{"app": "prometheus"}',
        "OVERSEER_AGENT_METRICS_PORT": str(METRICS_PORT),
    })
    dns = fake_pod(kubectl, infra, "coredns", {"k8s-app": "kube-dns"}, [(53, "UDP"), (53, "TCP")])
    not_dns = fake_pod(kubectl, infra, "resolver-lookalike", {"app": "resolver"}, [(53, "UDP"), (53, "TCP")])
    postgres = fake_pod(kubectl, infra, "postgresql", {"app": "postgresql"}, [(5432, "TCP")])
    redis = fake_pod(kubectl, infra, "redis", {"app": "redis"}, [(6379, "TCP")])
    gateway = fake_pod(kubectl, infra, "gateway", {"app.kubernetes.io/name": "overseer-gateway"},
                       [(GATEWAY_PORT, "TCP")])
    prometheus = fake_pod(kubectl, mon, "prometheus", {"app": "prometheus"}, [(9090, "TCP")])
    lookalike = fake_pod(kubectl, other, "prometheus", {"app": "prometheus"}, [(9090, "TCP")])
    neighbour = fake_pod(kubectl, namespace, "neighbour", {"app": "neighbour"}, [(8000, "TCP")])

    world.capability("git", cidr=CAPABILITY_CIDR)  # egress: that range on 443
    world.agent("coder", capabilities="[git]")
    world.wait_condition("agent", "coder", "Ready", "True")
    world.wait_condition("agent", "coder", "APIServerEgress", "True", "Allowed")
    world.wait_condition("agent", "coder", "ModelEgress", "True", "Gateway")
    world.goal("probe")
    goal = f"{namespace}/{world.running_pod('probe')}"
    for pod in (goal, dns, not_dns, postgres, redis, gateway, prometheus, lookalike, neighbour):
        pod_ip(kubectl, pod)
    api_address, api_port = api_server_endpoint(kubectl)

    expected = {
        # What the agent needs.
        Flow("API server", goal, api_address, api_port): True,
        Flow("DNS over UDP", goal, dns, 53, "UDP"): True,
        Flow("DNS over TCP", goal, dns, 53, "TCP"): True,
        Flow("knowledge base", goal, postgres, 5432): True,
        Flow("Redis", goal, redis, 6379): True,
        Flow("gateway", goal, gateway, GATEWAY_PORT): True,
        Flow("capability egress", goal, "198.51.100.10", 443): True,
        Flow("monitoring scrapes the metrics port", prometheus, goal, METRICS_PORT): True,
        # Everything else.
        Flow("the internet on 443", goal, "8.8.8.8", 443): False,
        Flow("the capability's range on another port", goal, "198.51.100.10", 22): False,
        Flow("the API server on another port", goal, api_address, 22): False,
        Flow("DNS to a pod that is not the cluster DNS", goal, not_dns, 53, "UDP"): False,
        Flow("the cluster DNS on another port", goal, dns, 80): False,
        Flow("the knowledge base's port on Redis", goal, redis, 5432): False,
        Flow("a pod in the goal's own namespace", goal, neighbour, 8000): False,
        Flow("a pod in another namespace", goal, lookalike, 9090): False,
        Flow("the gateway on another port", goal, gateway, 9999): False,
        Flow("another namespace scrapes the metrics port", lookalike, goal, METRICS_PORT): False,
        Flow("a neighbour scrapes the metrics port", neighbour, goal, METRICS_PORT): False,
        Flow("monitoring on another port", prometheus, goal, 8000): False,
        Flow("an outside address to the metrics port", "203.0.113.5", goal, METRICS_PORT): False,
    }
    got = verdicts(kubectl, list(expected))
    wrong = {f.name: ("allowed" if got[f.name] else "refused") for f, want in expected.items() if got[f.name] != want}
    assert not wrong, (f"flows the engine judges otherwise than intended: {wrong}\npolicy: "
                       f"{json.dumps(world.get('networkpolicy', 'overseer-agent-coder'))}\npods: "
                       f"{ {p: pod_ip(kubectl, p) for p in (goal, dns, postgres, redis, gateway, prometheus)} }")

    # The engine is not blind: without the operator's policy the same refused flows pass.
    kubectl("delete", "networkpolicy", "overseer-agent-coder", "-n", namespace)
    got = verdicts(kubectl, [f for f, want in expected.items() if not want])
    assert all(got.values()), f"refused with no policy in the namespace: {got}"


def test_without_a_gateway_only_the_configured_model_range_is_open_and_what_is_unreachable_is_named(
        namespace: str, kubectl: harness.Kubectl, crds: Any, admission_policies: Any, operator: Any,
        exit_pod: Any) -> None:
    # Redis is handed to goal pods (only as a URL: the operator never connects to it) but not opened.
    world = start_world(namespace, kubectl, operator, exit_pod, {"OVERSEER_MODEL_EGRESS_CIDRS": '["0.0.0.0/0"]',
                                                                 "OVERSEER_AGENT_REDIS_URL": "redis://redis.invalid:6379"})
    world.agent("coder")
    world.wait_condition("agent", "coder", "ModelEgress", "True", "Allowed")
    closed = world.wait_condition("agent", "coder", "ServiceEgress", "False", "ServiceEgressNotConfigured")
    assert "networkPolicy.redis" in closed["message"]
    world.goal("probe")
    goal = f"{namespace}/{world.running_pod('probe')}"
    pod_ip(kubectl, goal)

    expected = {
        Flow("a public address on 443", goal, "8.8.8.8", 443): True,
        Flow("a public address on 80", goal, "8.8.8.8", 80): False,
        Flow("a private address on 443", goal, "10.0.0.9", 443): False,
        Flow("another private range on 443", goal, "192.168.1.1", 443): False,
    }
    got = verdicts(kubectl, list(expected))
    assert {f.name: got[f.name] for f in expected} == {f.name: want for f, want in expected.items()}

    # An endpoint inside the cluster's own ranges is not reachable: the Agent says so, and how to fix it.
    world.kubectl("patch", "agent", "coder", "-n", namespace, "--type=merge",
                  "-p", '{"spec": {"model": {"baseURL": "https://10.0.0.9"}}}')
    refused = world.wait_condition("agent", "coder", "ModelEgress", "False", "ModelAddressNotAllowed")
    assert "10.0.0.9" in refused["message"] and "networkPolicy.modelEgress.cidrs" in refused["message"]
    wait_for(lambda: any(e["reason"] == "ModelAddressNotAllowed" and e["type"] == "Warning"
                         for e in world.events("coder")), description="a Warning event ModelAddressNotAllowed")


def test_by_default_an_agent_is_told_its_model_endpoint_is_closed(world: World) -> None:
    world.agent("coder")

    closed = world.wait_condition("agent", "coder", "ModelEgress", "False", "ModelEgressNotConfigured")

    assert "https://api.anthropic.com" in closed["message"] and "gateway.url" in closed["message"]
    policy = world.get("networkpolicy", "overseer-agent-coder")
    assert policy is not None and not policy["spec"].get("ingress")  # stored without the empty list
    assert all(rule.get("to") for rule in policy["spec"]["egress"]), "a rule without peers opens every address"
    assert not [peer for rule in policy["spec"]["egress"] for peer in rule["to"]
                if peer.get("ipBlock", {}).get("cidr", "").endswith("/0")]
