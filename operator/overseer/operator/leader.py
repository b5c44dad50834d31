"""Leader election on a coordination.k8s.io Lease, as client-go's: of several replicas only the
holder of the Lease reconciles; the others wait and take over when it stops renewing.

A Lease is taken over only after its record has stayed unchanged for its whole duration by
this replica's own clock (no comparison of clocks across machines). A leader that cannot
renew within the renew deadline stops reconciling before anyone else may take over
(renew deadline < lease duration), and a leader that shuts down cleanly hands the Lease
back at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from overseer.kube import ApiError, Kube, path

from .metrics import LEADER

logger = logging.getLogger(__name__)

LEASES = "coordination.k8s.io/v1"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace() -> str:
    """The operator's own namespace: POD_NAMESPACE, the pod's service account, or overseer-system."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "overseer-system"
    except OSError:
        return "overseer-system"


def _micro_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(self, kube: Kube, namespace: str, name: str = "overseer-operator", *,
                 lease_seconds: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 identity: str | None = None) -> None:
        self.kube = kube
        self.namespace, self.name = namespace, name
        self.lease_seconds, self.renew_deadline, self.retry_period = lease_seconds, renew_deadline, retry_period
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.leading = False
        self._observed: tuple[dict[str, Any], float] | None = None  # the Lease's spec, when it last changed

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def holder(self) -> str | None:
        """Who held the Lease when it was last read."""
        return (self._observed or ({}, 0.0))[0].get("holderIdentity")

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        logger.info("waiting to hold Lease %s as %s", self.lease, self.identity)
        while not await self._attempt():
            await asyncio.sleep(self.retry_period * random.uniform(1.0, 1.2))
        self.leading = True
        LEADER.set(1)
        logger.info("holding Lease %s as %s: reconciling", self.lease, self.identity)

    async def hold(self) -> None:
        """Renew the Lease until renewing fails for a whole renew deadline; then return."""
        while True:
            await asyncio.sleep(self.retry_period)
            deadline = time.monotonic() + self.renew_deadline
            while not await self._attempt(timeout=deadline - time.monotonic()):
                if time.monotonic() + self.retry_period / 4 >= deadline:
                    self.leading = False
                    LEADER.set(0)
                    logger.error("could not renew Lease %s within %g s (last seen held by %s): no longer the leader",
                                 self.lease, self.renew_deadline, self.holder)
                    return
                await asyncio.sleep(self.retry_period / 4)

    async def release(self) -> None:
        """Hand the Lease back (on a clean shutdown) so another replica takes over at once."""
        if not self.leading:
            return
        self.leading = False
        LEADER.set(0)
        try:
            lease = await asyncio.wait_for(self.kube.get(self._path()), self.retry_period)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
            await asyncio.wait_for(self.kube.request("PUT", self._path(), body=lease), self.retry_period)
            logger.info("released Lease %s", self.lease)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            logger.warning("could not release Lease %s (%s); it expires on its own", self.lease, e)

    def _path(self) -> str:
        return path(LEASES, "leases", self.namespace, self.name)

    async def _attempt(self, timeout: float | None = None) -> bool:
        """Take or renew the Lease once; False if another replica holds it or the API failed."""
        try:
            return await asyncio.wait_for(self._take_or_renew(), timeout)
        except ApiError as e:
            if e.status != 409:  # 409: another replica wrote first
                logger.warning("Lease %s: %s", self.lease, e)
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("Lease %s: API server unreachable (%s)", self.lease, type(e).__name__)
        return False

    async def _take_or_renew(self) -> bool:
        now = time.monotonic()
        lease = await self.kube.get(self._path())
        if lease is None:
            spec = self._spec(None)
            body = {"apiVersion": LEASES, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            if await self.kube.create(path(LEASES, "leases", self.namespace), body) is None:
                return False  # created by another replica just now
            self._observed = (spec, now)
            return True
        spec = lease.get("spec") or {}
        if self._observed is None or self._observed[0] != spec:
            self._observed = (spec, now)
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        if holder and holder != self.identity and self._observed[1] + duration > now:
            return False
        lease["spec"] = new = self._spec(spec)
        await self.kube.request("PUT", self._path(), body=lease)  # resourceVersion: 409 if changed
        self._observed = (new, now)
        return True

    def _spec(self, old: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time()
        old = old or {}
        mine = old.get("holderIdentity") == self.identity
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                "acquireTime": old["acquireTime"] if mine and old.get("acquireTime") else now, "renewTime": now,
                "leaseTransitions": old.get("leaseTransitions", 0) + (0 if mine or not old else 1)}
