"""kopf wiring: kopf runs the process (logging, credentials, liveness, signals); the
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

from .controller import Operator
from .events import EventRecorder
from .runtime import Runtime
from .settings import Settings


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    settings.posting.reporting_component = "overseer-operator"
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 60
    settings.scanning.disabled = True  # kopf watches nothing here: no CRD or namespace discovery

    async def login() -> kopf.ConnectionInfo:
        info = kopf.login_via_client(logger=logger, settings=settings)
        if info is None:
            raise kopf.LoginError("no Kubernetes credentials: set KUBECONFIG or run in a pod")
        return info

    config = Settings()
    kube = Kube(login, "overseer-operator", pool_size=max(8, config.workers * 2))
    rt = Runtime(kube=kube, settings=config, events=EventRecorder(kube))
    rt.events.busy = lambda: len(rt.goals) > 0 or len(rt.agents) > 0
    memo.operator = Operator(rt, namespaces=memo.get("namespaces") or [])
    # Filling the caches may take a while on a big cluster: do it beside kopf, which serves
    # liveness meanwhile.
    memo.operator_task = asyncio.create_task(memo.operator.run(), name="operator")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    operator = getattr(memo, "operator", None)
    if operator is not None:
        memo.operator_task.cancel()
        await operator.stop()
