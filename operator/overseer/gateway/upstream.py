"""Where an Agent's calls go: its spec.model.baseURL with the key from its apiKeySecretRef.

Only the gateway reads these Secrets; goal pods never see a key. Agents and Secrets are read
from the API server and reused for a few seconds, so a rotated key or a new baseURL is picked up
without a restart.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from async_lru import alru_cache

from overseer.api import API_VERSION
from overseer.kube import ApiError, Kube, path

from .errors import GatewayError
from .settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class Target:
    """One Agent's model endpoint and key."""

    base_url: str
    api_key: str
    model: str
    budget: dict[str, Any] | None = None  # the Agent's spec.budget (per goal)


class Targets:
    """Agent -> Target, read from the API server and cached for object_cache_seconds."""

    def __init__(self, kube: Kube, settings: GatewaySettings, max_entries: int = 4096) -> None:
        self._kube = kube
        self._default = settings.default_base_url.rstrip("/")
        ttl = settings.object_cache_seconds or None
        self._lookup = alru_cache(maxsize=max_entries, ttl=ttl)(self._target)

    async def target(self, namespace: str, agent: str) -> Target:
        found = await self._lookup(namespace, agent)
        if isinstance(found, GatewayError):
            raise found
        return found

    async def _target(self, namespace: str, agent_name: str) -> Target | GatewayError:
        where = f"Agent {namespace}/{agent_name}"
        try:
            agent = await self._kube.get(path(API_VERSION, "agents", namespace, agent_name))
            if agent is None:
                return GatewayError(403, f"{where} does not exist")
            model = agent.get("spec", {}).get("model", {})
            ref = model.get("apiKeySecretRef") or {}
            secret = await self._kube.get(path("v1", "secrets", namespace, ref.get("name", "")))
        except ApiError as e:
            raise GatewayError(503, f"{where}: the gateway cannot read it from the Kubernetes API: {e}") from e
        data = (secret or {}).get("data") or {}
        if secret is None or ref.get("key") not in data:
            # 503 rather than 4xx: the SDK retries, and creating the Secret heals it.
            return GatewayError(503, f"{where}: spec.model.apiKeySecretRef: Secret {ref.get('name')!r} "
                                     f"{'has no key ' + repr(ref.get('key')) if secret else 'does not exist'}; "
                                     "create it with the model API key")
        key = base64.b64decode(data[ref["key"]]).decode().strip()
        return Target((model.get("baseURL") or self._default).rstrip("/"), key, model.get("name", ""),
                      agent.get("spec", {}).get("budget"))

