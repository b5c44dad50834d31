"""The pod of one attempt of a Goal: a pure renderer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from overseer.api import Agent, Capability, Goal, gateway
from overseer.contract import AGENT_CONTAINER, AGENT_UID, COMMAND, TOOLS_COMMAND, TOOLS_SOCKET, WORKSPACE, Env, capability_env, secret_env
from overseer.api.meta import LABEL_AGENT, LABEL_ATTEMPT, LABEL_GOAL, LABEL_MANAGED_BY, LABEL_WARM, MANAGED_BY

from .agent_resources import child_name, owner_reference
from .knowledge_tenants import SECRET_KEY as KNOWLEDGE_SECRET_KEY
from .knowledge_tenants import SECRET_NAME as KNOWLEDGE_SECRET
from .redis_secret import SECRET_KEY as REDIS_SECRET_KEY
from .redis_secret import SECRET_NAME as REDIS_SECRET
from .settings import Settings
from .workspace import render_volumes


WARM_TEMPLATE = "overseer.dev/warm-template"
"""Annotation of a warm pod: a digest of the spec it was rendered with."""

API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where in-cluster clients look for the ServiceAccount token, CA and namespace."""

API_TOKEN_VOLUME: dict[str, Any] = {"name": "api-token", "projected": {"sources": [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
]}}
"""What the kubelet's automount would give, as a volume only the agent container mounts."""


def pod_name(goal_name: str, attempt: int) -> str:
    """Deterministic per attempt, so a restarted operator finds the pod it created instead of
    creating a second one."""
    suffix = f"-a{attempt}"
    if len(goal_name) + len(suffix) <= 63:
        return goal_name + suffix
    digest = hashlib.sha256(goal_name.encode()).hexdigest()[:8]
    # A name cut right after a dot would put "-" at the start of a DNS label.
    prefix = goal_name[:63 - len(suffix) - 9].rstrip(".")
    return f"{prefix}-{digest}{suffix}"


def capability_secrets(capabilities: Iterable[Capability]) -> list[dict[str, Any]]:
    """The environment that hands the agent container the Secret keys its capabilities' headers
    name (the agent puts them on requests; the model and the tools never see them)."""
    refs = set()
    for cap in capabilities:
        served = cap.spec.http or cap.spec.mcp
        for header in served.headers if served is not None else []:
            if header.secret_key_ref is not None:
                refs.add((header.secret_key_ref.name, header.secret_key_ref.key))
    return [{"name": secret_env(name, key), "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
            for name, key in sorted(refs)]


def render_pod(goal: Goal, agent: Agent, attempt: int, settings: Settings,
               capabilities: Iterable[Capability] = (), source_claim: str | None = None) -> dict[str, Any]:
    """A pod that runs the agent runtime on this goal, under the agent's ServiceAccount and
    the `restricted` Pod Security level; `capabilities` (the agent's, with what they require)
    bring the Secrets their headers and command env name; source_claim: the dependency's claim of spec.workspaceFrom."""
    pod = _render(agent, settings, capabilities, render_volumes(goal, agent, source_claim),
                  [{"name": Env.GOAL_NAME, "value": goal.name}])
    pod["metadata"].update(name=pod_name(goal.name, attempt), namespace=goal.namespace,
                           ownerReferences=[owner_reference(goal)])
    pod["metadata"]["labels"].update({LABEL_GOAL: goal.name, LABEL_ATTEMPT: str(attempt)})
    return pod


def _render(agent: Agent, settings: Settings, capabilities: Iterable[Capability],
            workspace: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]],
            identity: list[dict[str, Any]]) -> dict[str, Any]:
    """What a goal's pod and a warm pod share: all but the name, the owner and who it works for."""
    model = agent.spec.model
    capabilities = list(capabilities)
    workspace_volumes, workspace_mounts, workspace_env = workspace
    env: list[dict[str, Any]] = [
        *identity,
        {"name": Env.GOAL_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": Env.AGENT_NAME, "value": agent.name},
        *workspace_env,
        {"name": Env.TOOLS_SOCKET, "value": TOOLS_SOCKET},
    ]
    volumes: list[dict[str, Any]] = [*workspace_volumes, {"name": "tmp", "emptyDir": {}},
                                     {"name": "tools-tmp", "emptyDir": {}}, {"name": "tools-socket", "emptyDir": {}},
                                     API_TOKEN_VOLUME]
    socket_mount = {"name": "tools-socket", "mountPath": TOOLS_SOCKET.rsplit("/", 1)[0]}
    mounts: list[dict[str, Any]] = [*workspace_mounts, {"name": "tmp", "mountPath": "/tmp"},
                                    socket_mount, {"name": API_TOKEN_VOLUME["name"], "mountPath": API_TOKEN_DIR,
                                                   "readOnly": True}]
    if settings.gateway_url:
        # The key stays with the gateway; the pod proves who it is with a token bound to itself.
        env += [{"name": Env.ANTHROPIC_BASE_URL, "value": settings.gateway_url},
                {"name": gateway.TOKEN_FILE_ENV, "value": gateway.TOKEN_FILE}]
        volumes.append({"name": "gateway-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": gateway.AUDIENCE, "expirationSeconds": gateway.TOKEN_EXPIRY_SECONDS, "path": "token"}}]}})
        mounts.append({"name": "gateway-token", "mountPath": gateway.TOKEN_DIR, "readOnly": True})
    else:
        env.append({"name": Env.ANTHROPIC_API_KEY, "valueFrom": {"secretKeyRef": {
            "name": model.api_key_secret_ref.name, "key": model.api_key_secret_ref.key}}})
        if model.base_url:
            env.append({"name": Env.ANTHROPIC_BASE_URL, "value": model.base_url})
    if settings.knowledge_admin_url:
        # The namespace's own login; optional, so a pod started before the operator could write
        # it runs without the knowledge base (the Agent's KnowledgeBase condition says why).
        env.append({"name": Env.DATABASE_URL, "valueFrom": {"secretKeyRef": {
            "name": KNOWLEDGE_SECRET, "key": KNOWLEDGE_SECRET_KEY, "optional": True}}})
    if settings.agent_redis_url:
        # Written by the Agent's reconcile; optional, so without it the pod runs on local limits.
        env.append({"name": Env.REDIS_URL, "valueFrom": {"secretKeyRef": {
            "name": REDIS_SECRET, "key": REDIS_SECRET_KEY, "optional": True}}})
    for cap in capabilities:
        # Optional: a missing Secret fails that capability's calls with a clear error, not the pod.
        for var in cap.spec.command.env if cap.spec.command else []:
            env.append({"name": capability_env(cap.name, var.name), "valueFrom": {"secretKeyRef": {
                "name": var.secret_key_ref.name, "key": var.secret_key_ref.key, "optional": True}}})
    # Behind the gateway the gateway rate-limits; a pod's own limiter serves only direct calls.
    direct = not settings.gateway_url
    for name, value in ((Env.REQUESTS_PER_MINUTE, direct and settings.agent_requests_per_minute or None),
                        (Env.TOKENS_PER_MINUTE, direct and settings.agent_tokens_per_minute or None),
                        (Env.HEALTH_PORT, settings.agent_metrics_port)):
        if value is not None:
            env.append({"name": name, "value": str(value)})
    env += capability_secrets(capabilities)
    resources = agent.spec.resources.to_api()
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    # Where bash, command Capabilities and script tools run: the workspace and the socket are all
    # it shares with the agent container; no token, no credentials in its environment.
    tools = {
        "name": "tools",
        "image": agent.spec.image or settings.agent_image,
        "command": [TOOLS_COMMAND],
        "env": [{"name": Env.WORKSPACE, "value": WORKSPACE}, {"name": Env.TOOLS_SOCKET, "value": TOOLS_SOCKET}],
        "workingDir": WORKSPACE,
        "securityContext": security,
        "volumeMounts": [*workspace_mounts, {"name": "tools-tmp", "mountPath": "/tmp"}, socket_mount],
    }
    container = {
        "name": AGENT_CONTAINER,
        "image": agent.spec.image or settings.agent_image,
        "command": [COMMAND],
        "env": env,
        "workingDir": WORKSPACE,
        "ports": [{"name": "metrics", "containerPort": settings.agent_metrics_port}],
        "securityContext": security,
        "volumeMounts": mounts,
    }
    if resources:
        container["resources"] = tools["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "labels": {LABEL_AGENT: agent.name, LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/name": "overseer-agent"},
        },
        "spec": {
            "serviceAccountName": child_name(agent.name),
            # The token is mounted into the agent container alone (API_TOKEN_VOLUME), never the tools'.
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID, "fsGroup": AGENT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container, tools],
            "volumes": volumes,
        },
    }


def render_warm_pod(agent: Agent, settings: Settings, capabilities: Iterable[Capability] = ()) -> dict[str, Any]:
    """An idle pod of the Agent's warm pool: a goal's pod in all but the goal (an emptyDir workspace,
    no goal name: it learns its goal from the Goal whose status.pod names it), owned by the Agent
    until a goal claims it. Its template annotation tells a pool rendered from an older spec."""
    pod = _render(agent, settings, capabilities, render_volumes(None, agent, None),
                  [{"name": Env.POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    digest = hashlib.sha256(json.dumps(pod["spec"], sort_keys=True).encode()).hexdigest()[:16]
    pod["metadata"].update(generateName=f"{agent.name[:50].rstrip('.-')}-warm-", namespace=agent.namespace,
                           ownerReferences=[owner_reference(agent)], annotations={WARM_TEMPLATE: digest})
    pod["metadata"]["labels"][LABEL_WARM] = "idle"
    return pod


def claim_patch(pod: Mapping[str, Any], goal: Goal, attempt: int) -> dict[str, Any]:
    """The merge patch that makes an idle warm pod a goal's pod: the labels and owner a fresh pod of
    that attempt has, no warm label. Its resourceVersion is a precondition: of two claims (or a
    claim and a deletion) of one pod, only the first succeeds."""
    return {"metadata": {
        "resourceVersion": pod["metadata"]["resourceVersion"],
        "labels": {LABEL_GOAL: goal.name, LABEL_ATTEMPT: str(attempt), LABEL_WARM: None},
        "ownerReferences": [owner_reference(goal)],
    }}
