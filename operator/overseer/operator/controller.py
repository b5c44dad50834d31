"""The running operator: informers fill the caches, their events feed the work queues,
reconcilers do the rest."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
from collections.abc import Callable

from overseer.api import API_VERSION
from overseer.api.capability import with_requirements
from overseer.api.meta import LABEL_AGENT, LABEL_GOAL, LABEL_MANAGED_BY, LABEL_WARM, MANAGED_BY

from . import admission, metrics
from .agents import AgentReconciler
from .api_server import SLICES_API_VERSION, SLICES_NAMESPACE, SLICES_SELECTOR, api_server_egress
from .capabilities import CapabilityReconciler, needed
from .conditions import is_true
from .dispatch import TERMINAL, pod_outcome
from .failures import reported
from .goals import QUEUE_SWEEP_SECONDS, GoalReconciler
from .informer import Handler, Informer
from .lifecycle import STOPS_SUBGOALS
from .runtime import Runtime, goal_agent, slim_goal, slim_object, slim_pod
from .store import Raw, key_of

logger = logging.getLogger(__name__)


def namespace_filter(patterns: list[str]) -> tuple[list[str | None], Callable[[str], bool] | None]:
    """Which namespaces to watch: plain names get a watch each; any glob (team-*) means one
    cluster-wide watch filtered here. No patterns: the whole cluster."""
    if not patterns:
        return [None], None
    if any(ch in p for p in patterns for ch in "*?["):
        return [None], lambda ns: any(fnmatch.fnmatchcase(ns, p) for p in patterns)
    return list(dict.fromkeys(patterns)), None


class Operator:
    def __init__(self, rt: Runtime, namespaces: list[str] | None = None) -> None:
        self.rt = rt
        self.goals = GoalReconciler(rt)
        self.agents = AgentReconciler(rt)
        self.capabilities = CapabilityReconciler(rt)
        self._agent_seen: dict[tuple[str, str], tuple[object, ...]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.watching: list[tuple[Informer, asyncio.Task[None]]] = []  # each informer and its task
        self.started = False  # fill() was called: informers started
        self.reconciling = False  # run() got past fill(): reconcilers started
        watched, accept = namespace_filter(namespaces or [])
        kinds: list[tuple[str, str, Handler, str | None, Callable[[Raw], Raw] | None, str]] = [
            (API_VERSION, "agents", self.agent_changed, None, None, "agents"),
            (API_VERSION, "capabilities", self.capability_changed, None, None, "capabilities"),
            (API_VERSION, "goals", self.goal_changed, None, slim_goal, "goals"),
            # Only goal pods, filtered by the API server, not every pod of the cluster.
            ("v1", "pods", self.pod_changed, LABEL_GOAL, slim_pod, "pods"),
            # Idle warm pods: a claim takes the warm label off, moving the pod to the watch above.
            ("v1", "pods", self.goals.pool.pod_changed, LABEL_WARM, slim_pod, "warmpods"),
            ("v1", "persistentvolumeclaims", self.claim_changed, LABEL_GOAL, slim_object, "persistentvolumeclaims"),
            # Agents' modifications ConfigMaps: read from here, not fetched on every Agent reconcile.
            ("v1", "configmaps", self.configmap_changed, f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_AGENT}", None,
             "configmaps"),
        ]
        self.informers = [Informer(rt.kube, api_version, plural, rt.stores[store], handler, namespace=ns,
                                   label_selector=selector, accept=accept, transform=transform)
                          for api_version, plural, handler, selector, transform, store in kinds for ns in watched]
        rt.api_server = api_server_egress(rt.settings, [])
        if rt.api_server is None:  # not configured: follow what the API server publishes
            self.informers.append(Informer(rt.kube, SLICES_API_VERSION, "endpointslices", rt.stores["endpointslices"],
                                           self.api_server_changed, namespace=SLICES_NAMESPACE,
                                           label_selector=SLICES_SELECTOR))

    async def fill(self) -> None:
        """Start the informers and wait until every cache is filled (again: just the wait). A
        standby replica does this before it seeks the Lease, as controller-runtime's caches do:
        it is ready to serve, and a take-over needs no relist."""
        if not self.started:
            self.rt.events.start()
            self.watching = [(i, asyncio.create_task(i.run(), name=repr(i))) for i in self.informers]
            self._tasks = [task for _, task in self.watching]
            self.started = True
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        logger.info("caches filled: %s", ", ".join(f"{len(s)} {kind}" for kind, s in self.rt.stores.items()))

    async def run(self) -> None:
        """Fill every cache, then start reconciling: a reconcile never sees a half-listed world
        (a goal whose pod is not listed yet would look lost)."""
        await self.fill()
        self.reconciling = True
        await self.check_admission()  # before any decision is recorded as verified or not
        workers = self.rt.settings.workers
        for queue, reconciler, kind, plural in (
                (self.rt.goals, self.goals, "goal", "goals"), (self.rt.agents, self.agents, "agent", "agents"),
                (self.rt.capabilities, self.capabilities, "capability", "capabilities")):
            run = reported(reconciler.reconcile, functools.partial(self.rt.one, plural), self.rt.events)
            queue.start(metrics.instrumented(kind, run), workers)
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="queue-sweep"))
        self._tasks.append(asyncio.create_task(self._admission_loop(), name="admission-check"))

    async def stop(self) -> None:
        """Stop watching and reconciling (again: a no-op). The client stays open for its owner."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in (self.rt.goals, self.rt.agents, self.rt.capabilities):
            await queue.stop()
        await self.rt.events.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_SWEEP_SECONDS)
            self.goals.sweep_queues()

    async def check_admission(self) -> None:
        """Read the admission policies; when what is missing changes, every Agent's condition does."""
        try:
            state = await admission.check(self.rt.kube)
        except Exception as e:  # noqa: BLE001 - unreachable API: keep what was known, try again later
            logger.warning("admission policies not checked: %s", e)
            return
        if state != self.rt.admission:
            logger.log(logging.INFO if state.complete else logging.WARNING, "admission policies: %s",
                       state.condition()[2])
            self.rt.admission = state
            for key in self.rt.keys("agents"):
                self.rt.agents.add(key)

    async def _admission_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rt.settings.admission_check_seconds)
            await self.check_admission()

    async def _resync_loop(self) -> None:
        """Level-triggered safety net: look at everything again now and then (drift, lost events)."""
        while True:
            await asyncio.sleep(self.rt.settings.resync_seconds)
            self.agents.forget()
            for queue, kind in ((self.rt.capabilities, "capabilities"), (self.rt.agents, "agents"),
                                (self.rt.goals, "goals")):
                for key in self.rt.keys(kind):
                    queue.add(key)

    # ---- what each change means -------------------------------------------------------

    def goal_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        key = ns, name = key_of(raw)
        # The echo of our own status write shows nothing the reconcile that wrote it did not know.
        if event == "DELETED" or not self.rt.is_own_write(raw):
            self.rt.goals.add(key)
        self.rt.forget(event, raw)
        if event == "DELETED":
            self.rt.decisions.pop(raw["metadata"].get("uid") or "", None)
            self.goals.queue_wait.forget(raw["metadata"].get("uid") or "")
        phase = (raw.get("status") or {}).get("phase")
        finished = event == "DELETED" or phase in TERMINAL
        if finished or event == "ADDED":
            for dependent in self.rt.stores["goals"].names("dependency", key):
                self.rt.goals.add((ns, dependent))
        if phase in STOPS_SUBGOALS:
            for child in self.rt.stores["goals"].names("parent", key):
                self.rt.goals.add((ns, child))
        parent = (raw.get("spec") or {}).get("parent")
        if finished and parent:  # the parent's slot it ran in is free for a queued sibling
            for sibling in self.rt.stores["goals"].names("parent", (ns, parent)):
                self.rt.goals.add((ns, sibling))
        calls = (raw.get("status") or {}).get("capabilityCalls") or []
        if event == "DELETED" or calls != ((old or {}).get("status") or {}).get("capabilityCalls"):
            for entry in calls:  # their call statistics; coalesced to one write a second
                self.rt.capabilities.add_after((ns, entry.get("name") or ""), 1.0)
        agent = goal_agent(raw)
        if agent:
            self.rt.agents.add_after((ns, agent), self.agents.counts_delay((ns, agent)))  # its goal counts
            if finished:
                self.goals.wake_queue(ns, agent)

    def pod_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        labels = raw["metadata"].get("labels") or {}
        ns = raw["metadata"].get("namespace") or ""
        # In the cache now, so counted there: no longer in flight.
        self.rt.inflight.get((ns, labels.get(LABEL_AGENT, "")), set()).discard(raw["metadata"]["name"])
        outcome = pod_outcome(raw)
        if event == "MODIFIED" and old is not None and pod_outcome(old) == outcome:
            return  # scheduled, IP assigned, ...: nothing the goal shows
        if event == "ADDED" and self.goals.pod_recorded(raw):
            return  # the pod dispatch just created and recorded
        self.rt.goals.add((ns, labels[LABEL_GOAL]))
        agent = labels.get(LABEL_AGENT)
        if agent and (event == "DELETED" or outcome.state != "live"):
            self.goals.wake_queue(ns, agent)

    def claim_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        """A workspace claim's phase is shown on its goal (WorkspaceReady); one deleted is made again
        before the goal's next pod."""
        phase = (raw.get("status") or {}).get("phase")
        if event == "MODIFIED" and old is not None and (old.get("status") or {}).get("phase") == phase:
            return
        labels = raw["metadata"].get("labels") or {}
        self.rt.goals.add((raw["metadata"].get("namespace") or "", labels[LABEL_GOAL]))

    def configmap_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        """An Agent's modifications ConfigMap: the Agent shows how many are in use."""
        agent = (raw["metadata"].get("labels") or {}).get(LABEL_AGENT)
        if agent:
            self.rt.agents.add((raw["metadata"].get("namespace") or "", agent))

    def agent_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        self.rt.forget(event, raw)
        key = ns, _ = key_of(raw)
        meta = raw["metadata"]
        conditions = (raw.get("status") or {}).get("conditions") or []
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
            if self.rt.knowledge is not None:
                self.rt.knowledge.recheck(ns)
        self.rt.agents.add(key)
        for goal in self.rt.stores["goals"].names("namespace", ns):
            self.rt.goals.add((ns, goal))
        for cap in needed(self.rt, ns, list((raw.get("spec") or {}).get("capabilities") or [])):
            self.rt.capabilities.add((ns, cap))  # their usedBy

    def api_server_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        found = api_server_egress(self.rt.settings, self.rt.stores["endpointslices"].values())
        if found == self.rt.api_server:
            return
        logger.info("goal pods reach the API server at %s", found.describe() if found else "no known address")
        self.rt.api_server = found
        for key in self.rt.keys("agents"):  # their NetworkPolicies name the addresses
            self.rt.agents.add(key)

    def capability_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        self.rt.forget(event, raw)
        key = ns, name = key_of(raw)
        self.rt.capabilities.add(key)
        for cap in self.rt.stores["capabilities"].by("namespace", ns):
            if name in ((cap.get("spec") or {}).get("requires") or []):
                self.rt.capabilities.add(key_of(cap))
        caps = {c["metadata"]["name"]: c for c in self.rt.stores["capabilities"].by("namespace", ns)}

        def requires_of(n: str) -> list[str] | None:
            return None if n not in caps else list((caps[n].get("spec") or {}).get("requires") or [])

        for agent in self.rt.stores["agents"].by("namespace", ns):  # its own or one it needs through requires
            if name in with_requirements((agent.get("spec") or {}).get("capabilities") or [], requires_of):
                self.rt.agents.add(key_of(agent))
