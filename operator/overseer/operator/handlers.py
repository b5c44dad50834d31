"""kopf wiring: watches feed indexes (the caches) and work queues; reconcilers do the rest.

Every handler is an async index or a silent on.event (sync ones would hop to a thread pool):
kopf writes no progress or diff-base annotations, and each object costs only the writes its
reconcile decides on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from overseer.api import GROUP, VERSION
from overseer.api.meta import LABEL_AGENT, LABEL_GOAL

from . import metrics
from .agents import AgentReconciler
from .capabilities import CapabilityReconciler
from .conditions import is_true
from .dispatch import TERMINAL, pod_outcome
from .goals import GoalReconciler
from overseer.kube import Kube
from .runtime import Runtime
from .settings import Settings

logger = logging.getLogger(__name__)

INDEXES = ("goals", "goals_by_agent", "goals_by_dependency", "goals_by_namespace",
           "agents", "agents_by_namespace", "capabilities", "goal_pods", "agent_pods")


def _goal_agent(body: Any) -> str | None:
    status = body.get("status") or {}
    return status.get("agent") or ((body.get("spec") or {}).get("agentRef") or {}).get("name")


# ---- caches ------------------------------------------------------------------------------

@kopf.index(GROUP, VERSION, "goals")
async def goals(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


@kopf.index(GROUP, VERSION, "goals")
async def goals_by_agent(namespace: str, body: kopf.Body, **_: Any) -> Any:
    agent = _goal_agent(body)
    return {(namespace, agent): dict(body)} if agent else None


@kopf.index(GROUP, VERSION, "goals")
async def goals_by_dependency(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> Any:
    return {(namespace, dep): name for dep in spec.get("dependsOn") or []} or None


@kopf.index(GROUP, VERSION, "goals")
async def goals_by_namespace(namespace: str, name: str, **_: Any) -> Any:
    return {namespace: name}


@kopf.index(GROUP, VERSION, "agents")
async def agents(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


@kopf.index(GROUP, VERSION, "agents")
async def agents_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> Any:
    return {namespace: dict(body)}


@kopf.index(GROUP, VERSION, "capabilities")
async def capabilities(namespace: str, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): dict(body)}


@kopf.index("v1", "pods", labels={LABEL_GOAL: kopf.PRESENT})
async def goal_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, labels[LABEL_GOAL]): dict(body)}


@kopf.index("v1", "pods", labels={LABEL_GOAL: kopf.PRESENT, LABEL_AGENT: kopf.PRESENT})
async def agent_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, labels[LABEL_AGENT]): dict(body)}


# ---- events -> work queues -------------------------------------------------------------

class Operator:
    """The running operator: reconcilers, their queues and what the event handlers trigger."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.goals = GoalReconciler(rt)
        self.agents = AgentReconciler(rt)
        self.capabilities = CapabilityReconciler(rt)
        self._agent_seen: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._resync: asyncio.Task[None] | None = None

    def start(self) -> None:
        workers = self.rt.settings.workers
        for queue, reconciler, kind in ((self.rt.goals, self.goals, "goal"), (self.rt.agents, self.agents, "agent"),
                                        (self.rt.capabilities, self.capabilities, "capability")):
            queue.start(metrics.instrumented(kind, reconciler.reconcile, queue.__len__), workers)
        self._resync = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
        for queue in (self.rt.goals, self.rt.agents, self.rt.capabilities):
            await queue.stop()
        await self.rt.kube.close()

    async def _resync_loop(self) -> None:
        """Level-triggered safety net: look at everything again now and then (drift, lost events)."""
        while True:
            await asyncio.sleep(self.rt.settings.resync_seconds)
            self.agents.forget()
            for key in self.rt.keys("capabilities"):
                self.rt.capabilities.add(key)
            for key in self.rt.keys("agents"):
                self.rt.agents.add(key)
            for key in self.rt.keys("goals"):
                self.rt.goals.add(key)

    def forget(self, event: str | None, body: Any) -> None:
        if event == "DELETED":
            self.rt.written.pop(body["metadata"].get("uid"), None)

    def goal_changed(self, event: str | None, namespace: str, name: str, body: Any) -> None:
        self.forget(event, body)
        self.rt.goals.add((namespace, name))
        phase = (body.get("status") or {}).get("phase")
        finished = event == "DELETED" or phase in TERMINAL
        if finished or event in (None, "ADDED"):
            for dependent in self.rt.many("goals_by_dependency", (namespace, name)):
                self.rt.goals.add((namespace, dependent))
        agent = _goal_agent(body)
        if agent:
            self.rt.agents.add_after((namespace, agent), 1.0)  # counts; coalesced to one write a second
            if finished:
                self.goals.wake_queue(namespace, agent)

    def pod_changed(self, event: str | None, namespace: str, labels: Any, body: Any) -> None:
        self.rt.goals.add((namespace, labels[LABEL_GOAL]))
        agent = labels.get(LABEL_AGENT)
        if agent and (event == "DELETED" or pod_outcome(body).state != "live"):
            self.goals.wake_queue(namespace, agent)

    def agent_changed(self, event: str | None, namespace: str, name: str, body: Any) -> None:
        self.forget(event, body)
        key = (namespace, name)
        meta = body["metadata"]
        conditions = (body.get("status") or {}).get("conditions") or []
        seen = (meta.get("generation"), is_true(conditions, "Ready"),
                tuple(sorted((meta.get("labels") or {}).items())),
                tuple(sorted((meta.get("annotations") or {}).items())))
        if event == "DELETED":
            self._agent_seen.pop(key, None)
        elif self._agent_seen.get(key) == seen:
            # Only its status moved, most likely by our own count update: reconciling again
            # would only feed a write loop. Goal events refresh the counts.
            return
        else:
            self._agent_seen[key] = seen
        self.rt.agents.add(key)
        for goal in self.rt.many("goals_by_namespace", namespace):
            self.rt.goals.add((namespace, goal))
        for cap in (body.get("spec") or {}).get("capabilities") or []:
            self.rt.capabilities.add((namespace, cap))

    def capability_changed(self, event: str | None, namespace: str, name: str, body: Any) -> None:
        self.forget(event, body)
        self.rt.capabilities.add((namespace, name))
        for ns, other in self.rt.keys("capabilities"):
            cap = self.rt.one("capabilities", (ns, other))
            if ns == namespace and cap and name in ((cap.get("spec") or {}).get("requires") or []):
                self.rt.capabilities.add((ns, other))
        for agent in self.rt.many("agents_by_namespace", namespace):
            if name in ((agent.get("spec") or {}).get("capabilities") or []):
                self.rt.agents.add((namespace, agent["metadata"]["name"]))


@kopf.on.event(GROUP, VERSION, "goals")
async def goal_event(type: str | None, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.operator.goal_changed(type, namespace, name, body)


@kopf.on.event("v1", "pods", labels={LABEL_GOAL: kopf.PRESENT})
async def pod_event(type: str | None, namespace: str, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo,
              **_: Any) -> None:
    memo.operator.pod_changed(type, namespace, labels, body)


@kopf.on.event(GROUP, VERSION, "agents")
async def agent_event(type: str | None, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.operator.agent_changed(type, namespace, name, body)


@kopf.on.event(GROUP, VERSION, "capabilities")
async def capability_event(type: str | None, namespace: str, name: str, body: kopf.Body, memo: kopf.Memo,
                           **_: Any) -> None:
    memo.operator.capability_changed(type, namespace, name, body)


# ---- lifecycle -------------------------------------------------------------------------

@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    # Anything kopf itself would persist goes under the project's own names.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.reporting_component = "overseer-operator"
    settings.posting.level = logging.WARNING
    # Watch streams can go silent behind load balancers: reconnect rather than wait forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 360
    settings.networking.request_timeout = 60
    # Only goal pods, filtered by the API server, not every pod of the cluster.
    settings.watching.label_selectors["v1", "pods"] = LABEL_GOAL

    async def login() -> kopf.ConnectionInfo:
        info = kopf.login_via_client(logger=logger, settings=settings)
        if info is None:
            raise kopf.LoginError("no Kubernetes credentials: set KUBECONFIG or run in a pod")
        return info

    config = Settings()
    rt = Runtime(kube=Kube(login, "overseer-operator", pool_size=max(8, config.workers * 2)), settings=config,
                 indexes={name: kwargs[name] for name in INDEXES})
    memo.operator = Operator(rt)
    memo.operator.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    operator = getattr(memo, "operator", None)
    if operator is not None:
        await operator.stop()
