"""kopf wiring: kopf runs the process (logging, credentials, signals); the
operator's own informers and work queues (controller.py) do the watching and reconciling.

kopf's per-event machinery (handler invocation, diff-base copies of every body) cost more CPU
than Overseer's whole reconcile of a goal (docs/performance.md), so no resource handlers here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from overseer.kube import Kube
from overseer.prices import PriceTable

from .controller import Operator
from .events import EventRecorder
from .health import Probes
from .knowledge_tenants import KnowledgeTenants
from .redis_secret import RedisSecrets
from .leader import LeaderElection
from .metrics import CACHE, LEADER
from .runtime import Runtime
from .settings import Settings


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo,
                  logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    settings.posting.reporting_component = "overseer-operator"
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    settings.scanning.disabled = True  # kopf watches nothing here: no CRD or namespace discovery

    async def login() -> kopf.ConnectionInfo:
        info = kopf.login_via_client(logger=logger, settings=settings)
        if info is None:
            raise kopf.LoginError("no Kubernetes credentials: set KUBECONFIG or run in a pod")
        return info

    config: Settings = memo.settings
    kube = Kube(login, "overseer-operator", pool_size=max(8, config.workers * 2))
    knowledge = (KnowledgeTenants(config.knowledge_admin_url, kube, recheck_seconds=config.secret_recheck_seconds)
                 if config.knowledge_admin_url else None)
    redis = RedisSecrets(kube, config.agent_redis_url) if config.agent_redis_url else None
    rt = Runtime(kube=kube, settings=config, events=EventRecorder(kube), knowledge=knowledge, redis=redis,
                 prices=PriceTable(config.gateway_prices_file))
    rt.events.busy = lambda: len(rt.goals) > 0 or len(rt.agents) > 0
    rt.events.fold_into = rt.event_owner
    CACHE.goals = rt.stores["goals"].values
    memo.operator = Operator(rt, namespaces=memo.get("namespaces") or [])
    CACHE.leading = lambda: memo.operator.reconciling
    memo.election = LeaderElection(
        kube, memo.lease_namespace, lease_seconds=config.lease_duration_seconds,
        renew_deadline=config.lease_renew_deadline_seconds, retry_period=config.lease_retry_period_seconds,
    ) if memo.get("lease_namespace") else None
    probes: Probes = memo.probes
    probes.operator, probes.election = memo.operator, memo.election
    memo.beat_task = asyncio.create_task(probes.beat(), name="health-beat")
    # Waiting for the Lease and filling the caches may take a while: beside kopf.
    memo.operator_task = asyncio.create_task(lead(memo), name="operator")


async def lead(memo: kopf.Memo) -> None:
    """Reconcile, as the leader when elected; on losing the Lease stop reconciling at once and
    end the process (non-zero: its pod restarts and waits for the Lease again)."""
    election: LeaderElection | None = memo.election
    if election is None:
        LEADER.set(1)
        await memo.operator.run()
        return
    await memo.operator.fill()  # a standby's caches are warm: ready, and a take-over needs no relist
    await election.acquire()
    await memo.operator.run()
    await election.hold()
    await memo.operator.stop()
    memo.lost_lease = True
    memo.stop.set()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    operator = getattr(memo, "operator", None)
    if operator is not None:
        memo.beat_task.cancel()
        memo.operator_task.cancel()
        await operator.stop()
        if memo.election is not None:
            await memo.election.release()
        if operator.rt.knowledge is not None:
            await operator.rt.knowledge.close()
        await operator.rt.kube.close()
