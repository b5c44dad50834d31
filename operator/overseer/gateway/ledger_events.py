"""Events on the Goals whose spend rows wait because the ledger's PostgreSQL refuses them.

Rows wait in the replica's memory (ledger.py) and budgets count them meanwhile, so calls go on;
but a replica that restarts loses them, and a full disk only ends when a person frees space.
Each Goal with waiting rows gets one Warning Event when they start to wait (SpendLedgerDiskFull
or SpendLedgerUnavailable) and a Normal one, SpendLedgerWritten, once they are in the ledger.
The gateway's ServiceAccount may create events and nothing more of the kind (docs/gateway.md).
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone

from overseer.api import API_VERSION
from overseer.kube import Kube, now_iso, path

from .ledger import Ledger, Refusal

log = logging.getLogger(__name__)

COMPONENT = "overseer-gateway"


class LedgerEvents:
    def __init__(self, kube: Kube, ledger: Ledger) -> None:
        self._kube, self._ledger = kube, ledger
        self._instance = socket.gethostname()  # the pod's name in a cluster
        self._told: dict[tuple[str, str, str], Refusal] = {}  # goal -> the refusal its Warning named

    async def check(self) -> None:
        """Post the Events the ledger's state calls for since the last check."""
        refused = self._ledger.refused
        if refused is None:
            for goal, was in list(self._told.items()):
                since = datetime.fromtimestamp(was.since, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                if await self._post(goal, "Normal", "SpendLedgerWritten",
                                    f"the spend rows of this goal's model calls held by gateway {self._instance} "
                                    f"since {since} ({was.reason}) are in the ledger"):
                    del self._told[goal]
            return
        for goal, rows in self._ledger.waiting_by_goal().items():
            if self._told.get(goal) is not None and self._told[goal].reason == refused.reason:
                continue
            if refused.reason == "DiskFull":
                reason = "SpendLedgerDiskFull"
                message = (f"the spend ledger's PostgreSQL refuses rows: its disk is full ({refused.error}). {rows} "
                           f"row{'s' * (rows != 1)} of this goal's model calls {'wait' if rows != 1 else 'waits'} in the memory of gateway "
                           f"{self._instance} (budgets count them meanwhile; a restart of that replica loses them) "
                           f"and are written once it has space; free space on the ledger's PostgreSQL volume or "
                           f"give it a larger one")
            else:
                reason = "SpendLedgerUnavailable"
                message = (f"the spend ledger's PostgreSQL does not take rows ({refused.error}). {rows} "
                           f"row{'s' * (rows != 1)} of this goal's model calls {'wait' if rows != 1 else 'waits'} in the memory of gateway "
                           f"{self._instance} (budgets count them meanwhile) and are written once it answers")
            if await self._post(goal, "Warning", reason, message):
                self._told[goal] = refused

    async def _post(self, goal: tuple[str, str, str], type_: str, reason: str, message: str) -> bool:
        namespace, name, uid = goal
        stamp = now_iso()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name[:230]}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": {"apiVersion": API_VERSION, "kind": "Goal", "name": name, "namespace": namespace,
                                   "uid": uid},
                "type": type_, "reason": reason, "message": message[:1024],
                "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                "reportingInstance": self._instance[:128], "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
        try:
            await self._kube.create(path("v1", "events", namespace), body)
            return True
        except Exception as e:  # noqa: BLE001 - any failure: the next check tries again
            log.warning("event %s on goal %s/%s not created: %s", reason, namespace, name, e)
            return False
