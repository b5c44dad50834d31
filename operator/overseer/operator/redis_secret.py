"""Redis for goal pods, by reference: the URL holds a password, so the operator writes it to the
Secret `overseer-redis` in each namespace that has an Agent, and goal pods read it through
secretKeyRef. A pod spec (readable by anyone who may list pods) never carries the value."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from overseer.api.meta import LABEL_MANAGED_BY, MANAGED_BY
from overseer.kube import Kube, path

SECRET_NAME = "overseer-redis"
SECRET_KEY = "url"


def render_secret(namespace: str, url: str) -> dict[str, Any]:
    """The namespace's copy of the Redis URL goal pods use."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "data": {SECRET_KEY: base64.b64encode(url.encode()).decode()},
    }


class RedisSecrets:
    """Writes the Secret once per namespace and URL; `forget` makes the next reconcile write it again
    (drift repair: someone edited or deleted it)."""

    def __init__(self, kube: Kube, url: str) -> None:
        self.kube, self.url = kube, url
        self._digest = hashlib.sha256(url.encode()).hexdigest()
        self._written: dict[str, str] = {}

    def forget(self) -> None:
        self._written.clear()

    async def ensure(self, namespace: str) -> None:
        if self._written.get(namespace) == self._digest:
            return
        await self.kube.apply(path("v1", "secrets", namespace, SECRET_NAME), render_secret(namespace, self.url))
        self._written[namespace] = self._digest
