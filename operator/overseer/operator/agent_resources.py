"""What an Agent implies in its namespace: pure renderers, tested without a cluster."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from overseer import modifications
from overseer.api import API_VERSION, GROUP, Agent, Capability
from overseer.api.meta import LABEL_AGENT, LABEL_MANAGED_BY, MANAGED_BY

from .api_server import APIServerEgress
from .settings import ServiceEgress, Settings

DEFAULT_MODEL_URL = "https://api.anthropic.com"  # what the SDK calls when spec.model.baseURL is unset


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


def _namespace_pods(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": dict(labels)}}


def _service_rule(service: ServiceEgress) -> list[dict[str, Any]]:
    """The egress rule reaching a configured service, or none while it is not configured."""
    if not service.configured:
        return []
    peers = ([{"ipBlock": {"cidr": c}} for c in service.cidrs] if service.cidrs
             else [_namespace_pods(service.namespace, service.pod_labels)])
    return [{"to": peers, "ports": _ports(service.ports)}]


def gateway_port(settings: Settings) -> int:
    url = urlsplit(settings.gateway_url or "")
    return settings.gateway_pod_port or url.port or (443 if url.scheme == "https" else 80)


def render_network_policy(agent: Agent, capabilities: list[Capability], settings: Settings,
                          api_server: APIServerEgress | None = None) -> dict[str, Any]:
    """Default deny for the agent's pods. Egress only to the cluster DNS pods, the model
    endpoint's configured CIDRs (or the gateway's pods alone, when one is configured), the
    Kubernetes API server (when its addresses are known), the knowledge base and Redis (when
    configured) and what its capabilities declare; ingress only to the agent's metrics port,
    from the monitoring namespace. A rule is never rendered without peers: an empty `to`
    would open every destination."""
    egress: list[dict[str, Any]] = [{"to": [_namespace_pods(settings.dns_namespace, settings.dns_pod_labels)],
                                     "ports": _ports([53], "UDP") + _ports([53], "TCP")}]
    if settings.gateway_url:  # the gateway holds the key and alone reaches the model endpoint
        egress.append({"to": [_namespace_pods(settings.gateway_namespace, settings.gateway_pod_labels)],
                       "ports": _ports([gateway_port(settings)])})
    elif settings.model_egress_cidrs:
        egress.append({"to": [_ip_block(cidr, settings.model_egress_except) for cidr in settings.model_egress_cidrs],
                       "ports": _ports(settings.model_egress_ports)})
    if api_server is not None:
        egress.append({"to": [{"ipBlock": {"cidr": c}} for c in api_server.cidrs],
                       "ports": _ports(list(api_server.ports))})
    egress += _service_rule(settings.knowledge_egress) + _service_rule(settings.redis_egress)
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
    ingress: list[dict[str, Any]] = []
    if settings.monitoring_namespace:
        ingress.append({"from": [_namespace_pods(settings.monitoring_namespace, settings.monitoring_pod_labels)],
                        "ports": _ports([settings.agent_metrics_port])})
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _metadata(agent),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_AGENT: agent.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def _model_endpoint(agent: Agent) -> tuple[str, str, int]:
    url = urlsplit(agent.spec.model.base_url or DEFAULT_MODEL_URL)
    return url.geturl(), url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def model_egress_condition(agent: Agent, settings: Settings) -> tuple[bool, str, str]:
    """Whether the agent's NetworkPolicy lets its goal pods reach the model endpoint they call.
    A host name cannot be checked (a policy matches addresses): its port is, and the message
    names the CIDRs it must resolve into."""
    if settings.gateway_url:
        return True, "Gateway", (f"goal pods reach the model through the gateway {settings.gateway_url} (pods "
                                 f"{settings.gateway_pod_labels} in namespace {settings.gateway_namespace}, port "
                                 f"{gateway_port(settings)})")
    url, host, port = _model_endpoint(agent)
    where = (f"Agent {agent.namespace}/{agent.name}: NetworkPolicy {child_name(agent.name)} does not let goal pods "
             f"reach the model endpoint {url} (spec.model.baseURL)")
    if not settings.model_egress_cidrs:
        return False, "ModelEgressNotConfigured", (
            f"{where}: no egress is configured for it. Set the chart value networkPolicy.modelEgress.cidrs "
            f"(OVERSEER_MODEL_EGRESS_CIDRS) to the endpoint's addresses, or run the model gateway (gateway.url)")
    if port not in settings.model_egress_ports:
        return False, "ModelPortNotAllowed", (
            f"{where}: port {port} is not among networkPolicy.modelEgress.ports (OVERSEER_MODEL_EGRESS_PORTS) "
            f"{settings.model_egress_ports}; add it")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True, "Allowed", (f"goal pods may reach port {port} of {', '.join(settings.model_egress_cidrs)}; "
                                 f"{host} must resolve into them (a NetworkPolicy cannot match host names)")
    for cidr in settings.model_egress_cidrs:
        block = _ip_block(cidr, settings.model_egress_except)["ipBlock"]
        if _contains(block["cidr"], address) and not any(_contains(c, address) for c in block.get("except", [])):
            return True, "Allowed", f"goal pods may reach {address} port {port} (in {cidr})"
    return False, "ModelAddressNotAllowed", (
        f"{where}: {address} is outside networkPolicy.modelEgress.cidrs (OVERSEER_MODEL_EGRESS_CIDRS) "
        f"{settings.model_egress_cidrs} less their except ranges {settings.model_egress_except}; add it")


def service_egress_condition(agent: Agent, settings: Settings) -> tuple[bool, str, str]:
    """Whether the agent's NetworkPolicy opens the knowledge base and Redis its goal pods are handed."""
    handed = [("the knowledge base", settings.knowledge_admin_url, settings.knowledge_egress,
               "networkPolicy.knowledgeBase (OVERSEER_KNOWLEDGE_EGRESS)"),
              ("Redis", settings.agent_redis_url, settings.redis_egress, "networkPolicy.redis (OVERSEER_REDIS_EGRESS)")]
    closed = [(what, value) for what, url, egress, value in handed if url and not egress.configured]
    if closed:
        return False, "ServiceEgressNotConfigured", (
            f"Agent {agent.namespace}/{agent.name}: NetworkPolicy {child_name(agent.name)} does not let goal pods reach "
            f"{' or '.join(what for what, _ in closed)}, which they are given: under a network plugin that enforces "
            f"NetworkPolicy they cannot connect. Set {' and '.join(value for _, value in closed)} to its pods "
            f"(namespace, podLabels, ports) or addresses (cidrs, ports)")
    opened = [what for what, url, _, _ in handed if url]
    return True, "Allowed", (f"goal pods may reach {' and '.join(opened)}" if opened
                             else "goal pods are given no knowledge base or Redis")


def _contains(cidr: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version == address.version and address in net


def render_resource_quota(agent: Agent) -> dict[str, Any] | None:
    """The Agent's spec.quota as a ResourceQuota, or None when it sets none."""
    if not agent.spec.quota:
        return None
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _metadata(agent),
            "spec": {"hard": {k: str(v) for k, v in sorted(agent.spec.quota.items())}}}
