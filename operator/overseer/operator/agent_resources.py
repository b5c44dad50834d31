"""What an Agent implies in its namespace: pure renderers, tested without a cluster."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from overseer import modifications
from overseer.api import API_VERSION, GROUP, Agent, Capability
from overseer.api.meta import LABEL_AGENT, LABEL_MANAGED_BY, MANAGED_BY

from .api_server import APIServerEgress
from .settings import Settings


def child_name(agent_name: str) -> str:
    """Name shared by the ServiceAccount, Role, RoleBinding, NetworkPolicy and ResourceQuota of an agent."""
    return f"overseer-agent-{agent_name}"


def owner_reference(obj: Agent | Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": obj.kind, "name": obj.name,
        "uid": obj.metadata["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def _metadata(agent: Agent) -> dict[str, Any]:
    # Labels chosen here rather than copied from the Agent, so GitOps tracking labels do
    # not leak onto the children.
    return {
        "name": child_name(agent.name),
        "namespace": agent.namespace,
        "labels": {LABEL_AGENT: agent.name, LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": [owner_reference(agent)],
    }


def render_service_account(agent: Agent) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(agent)}


def render_role(agent: Agent, capabilities: list[str] | None = None) -> dict[str, Any]:
    """Least privilege for the agent's pods: read its Agent, Capabilities (`capabilities`: those it
    lists and what they require; by default those it lists), Goals and approved
    self-modifications, report on Goal status, create sub-goals and events. No update/patch of
    Goals themselves, so an agent can never set the approval annotations on its own goal, and no
    write to its modifications ConfigMap, so it can never approve a change to itself."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": [GROUP], "resources": ["agents"], "resourceNames": [agent.name], "verbs": ["get"]},
        {"apiGroups": [GROUP], "resources": ["goals"], "verbs": ["get", "list", "watch", "create"]},
        {"apiGroups": [GROUP], "resources": ["goals/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [modifications.configmap_name(agent.name)],
         "verbs": ["get"]},
    ]
    names = sorted(set(agent.spec.capabilities if capabilities is None else capabilities))
    if names:
        rules.insert(1, {"apiGroups": [GROUP], "resources": ["capabilities"], "resourceNames": names, "verbs": ["get"]})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _metadata(agent),
            "rules": rules}


def render_role_binding(agent: Agent) -> dict[str, Any]:
    name = child_name(agent.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _metadata(agent),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": agent.namespace}],
    }


def _ports(ports: list[int], protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": p} for p in ports]


def _ip_block(cidr: str, excluded: list[str]) -> dict[str, Any]:
    """An ipBlock for cidr, less each excluded range that lies inside it (whatever cidr is:
    0.0.0.0/1 contains 10.0.0.0/8 as much as 0.0.0.0/0 does). Only strict subsets are named,
    as the API server rejects any other `except` entry."""
    net = ipaddress.ip_network(cidr, strict=False)
    inside = []
    for text in excluded:
        sub = ipaddress.ip_network(text, strict=False)
        if sub.version == net.version and sub.prefixlen > net.prefixlen and sub.subnet_of(net):  # type: ignore[arg-type]
            inside.append(text)
    return {"ipBlock": {"cidr": cidr, **({"except": inside} if inside else {})}}


def render_network_policy(agent: Agent, capabilities: list[Capability], settings: Settings,
                          api_server: APIServerEgress | None = None) -> dict[str, Any]:
    """Default deny for the agent's pods; egress only to DNS, the model API (or the
    gateway, when one is configured), the Kubernetes API
    (when its addresses are known) and what its capabilities declare; ingress only to the
    agent's metrics port."""
    dns_peer: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}},
        "podSelector": {"matchLabels": dict(settings.dns_pod_labels)},
    }
    egress: list[dict[str, Any]] = [{"to": [dns_peer], "ports": _ports([53], "UDP") + _ports([53], "TCP")}]
    if settings.gateway_url:  # the gateway holds the key and alone reaches the model API
        url = urlsplit(settings.gateway_url)
        egress.append({"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.gateway_namespace}},
            "podSelector": {"matchLabels": dict(settings.gateway_pod_labels)}}],
            "ports": _ports([url.port or (443 if url.scheme == "https" else 80)])})
    else:
        egress.append({"to": [_ip_block(cidr, settings.model_egress_except) for cidr in settings.model_egress_cidrs],
                       "ports": _ports(settings.model_egress_ports)})
    if api_server is not None:
        egress.append({"to": [{"ipBlock": {"cidr": c}} for c in api_server.cidrs],
                       "ports": _ports(list(api_server.ports))})
    for cap in sorted(capabilities, key=lambda c: c.name):
        for rule in cap.spec.egress:
            peer: dict[str, Any]
            if rule.cidr:
                peer = {"ipBlock": {"cidr": rule.cidr}}
            else:
                peer = {}
                if rule.namespace_selector is not None:
                    peer["namespaceSelector"] = rule.namespace_selector.to_api()
                if rule.pod_selector is not None:
                    peer["podSelector"] = rule.pod_selector.to_api()
            entry: dict[str, Any] = {"to": [peer]}
            if rule.ports:
                entry["ports"] = _ports(rule.ports, rule.protocol)
            egress.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _metadata(agent),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_AGENT: agent.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": _ports([settings.agent_metrics_port])}],
            "egress": egress,
        },
    }


def render_resource_quota(agent: Agent) -> dict[str, Any] | None:
    """The Agent's spec.quota as a ResourceQuota, or None when it sets none."""
    if not agent.spec.quota:
        return None
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _metadata(agent),
            "spec": {"hard": {k: str(v) for k, v in sorted(agent.spec.quota.items())}}}
