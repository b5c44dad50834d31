"""Cost in status: Goal.status.cost and Agent.status.cost, from the spend ledger.

Each call marks its Goal, the goals above it and its Agent; every `interval` seconds the marked
ones get their totals
from the ledger (not from this replica's counters, so two replicas write the same numbers) and
a merge patch of status.cost alone, under the field manager overseer-gateway (and, while the
ledger refuses rows, an Event on each Goal whose rows wait: ledger_events). A Goal's usd,
tokens and requests include its sub-goals' (what its per-goal budget counts); ownUsd is what its
own attempts spent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from overseer.api import API_VERSION
from overseer.kube import ApiError, Kube, path

from .ledger import Ledger, LedgerUnavailable, Spend
from .ledger_events import LedgerEvents

log = logging.getLogger(__name__)


class CostStatus:
    def __init__(self, kube: Kube, ledger: Ledger, interval: float = 2.0) -> None:
        self._kube = kube
        self._ledger = ledger
        self._interval = interval
        self._goals: dict[str, tuple[str, str]] = {}  # goal uid -> (namespace, name)
        self._agents: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.ledger_events = LedgerEvents(kube, ledger)

    def spent(self, spend: Spend) -> None:
        self._goals[spend.goal_uid] = (spend.namespace, spend.goal)
        for uid, name in zip(spend.ancestor_uids, spend.ancestors):
            self._goals[uid] = (spend.namespace, name)
        self._agents.add((spend.namespace, spend.agent))

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="cost-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.write()  # what the last calls cost

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.write()
            await self.ledger_events.check()

    async def write(self) -> None:
        """Write the cost of every Goal and Agent that spent since the last write."""
        goals, self._goals = self._goals, {}
        agents, self._agents = self._agents, set()
        try:
            for uid, (namespace, name) in goals.items():
                total, own = await self._ledger.goal_total(uid), await self._ledger.goal_own_total(uid)
                await self._kube.merge_patch(path(API_VERSION, "goals", namespace, name, "status"), {"status": {
                    "cost": {"usd": round(float(total.cost_usd), 6), "tokens": total.tokens,
                             "requests": total.requests, "ownUsd": round(float(own.cost_usd), 6)}}})
            for namespace, name in agents:
                today, total = await self._ledger.agent_totals(namespace, name)
                await self._kube.merge_patch(path(API_VERSION, "agents", namespace, name, "status"), {"status": {
                    "cost": {"todayUsd": round(float(today.cost_usd), 6), "totalUsd": round(float(total.cost_usd), 6),
                             "day": time.strftime("%Y-%m-%d", time.gmtime())}}})
        except (ApiError, LedgerUnavailable, OSError) as e:
            log.warning("cost status: %s; tried again later", e)
            for uid, where in goals.items():
                self._goals.setdefault(uid, where)
            self._agents |= agents
