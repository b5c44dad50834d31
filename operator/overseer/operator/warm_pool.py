"""An Agent's warm pool (spec.warmPool): idle agent pods, started before any goal needs them, that
dispatch claims instead of creating a pod, and that the Agent's reconcile refills.

A warm pod is a goal's pod in all but the goal: same ServiceAccount, labels the NetworkPolicy
selects, containers, credentials and an emptyDir workspace. Claiming it is one patch (labels and
owner of the goal's pod, the warm label gone) with the pod's resourceVersion as a precondition, so
a pod is never claimed twice, and an operator that dies after the patch finds the pod by its goal
label like any other goal pod. The agent in it waits for the Goal whose status.pod names it.

Only goals whose workspace is an emptyDir are served: a pod's volumes cannot change after it is
created, so a warm pod cannot mount a claim that belongs to a goal not known yet, and a claim made
beforehand could not become the goal's (its name is the goal's, so that dependents find it)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from overseer.api import Agent, Capability, Goal
from overseer.api.meta import LABEL_AGENT
from overseer.kube import ApiError, path

from .dispatch import pod_outcome
from .pods import WARM_TEMPLATE, claim_patch, render_warm_pod
from .runtime import Raw, Runtime

STARTING_FOR_AT_MOST_S = 30.0  # a created pod the watch has not shown after this long is not waited for


def serves(agent: Agent, goal: Goal) -> bool:
    """Whether a goal of this agent may run in a warm pod (see the module's docstring)."""
    return agent.spec.warm_pool > 0 and agent.spec.workspace is None and goal.spec.workspace_from is None


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass(frozen=True)
class Plan:
    idle: list[str]       # claimable now, readiest first
    create: int           # pods to start
    delete: list[str]     # pods to remove: ended, from an older spec, or beyond the size


def plan(size: int, template: str, pods: Iterable[Mapping[str, Any]], taken: set[tuple[str, str]],
         starting: int = 0) -> Plan:
    """What the pool should do, from its pods as the cache shows them. `taken`: pods claimed whose
    change the watch has not shown yet; `starting`: pods created that it has not shown yet. A pod
    whose process ended (killed while idle) is replaced."""
    keep: list[Mapping[str, Any]] = []
    delete: list[str] = []
    for pod in pods:
        meta = pod["metadata"]
        if (meta.get("namespace") or "", meta["name"]) in taken or meta.get("deletionTimestamp"):
            continue
        if pod_outcome(pod).state != "live" or (meta.get("annotations") or {}).get(WARM_TEMPLATE) != template:
            delete.append(meta["name"])
        else:
            keep.append(pod)
    keep.sort(key=lambda p: (not _ready(p), (p.get("status") or {}).get("phase") != "Running",
                             p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    delete += [p["metadata"]["name"] for p in keep[size:]]
    idle = [p["metadata"]["name"] for p in keep[:size]]
    return Plan(idle=idle, create=max(0, size - len(idle) - starting), delete=delete)


class WarmPool:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def pods(self, ns: str, agent: str) -> list[Raw]:
        return self.rt.by("warmpods", "agent", (ns, agent))

    def _plan(self, agent: Agent, capabilities: list[Capability], size: int) -> tuple[Plan, dict[str, Any]]:
        pod = render_warm_pod(agent, self.rt.settings, capabilities)
        starting = self.rt.warm_starting[(agent.namespace, agent.name)]
        for name, since in list(starting.items()):
            if time.monotonic() - since > STARTING_FOR_AT_MOST_S:  # its event was lost (a relist): the cache says
                del starting[name]
        return plan(size, pod["metadata"]["annotations"][WARM_TEMPLATE], self.pods(agent.namespace, agent.name),
                    self.rt.warm_taken, len(starting)), pod

    async def sync(self, agent: Agent, capabilities: list[Capability], size: int, raw: Raw) -> int:
        """Bring the pool to `size` idle pods of the current spec; return how many are idle now.
        Creating never overshoots for long: a surplus (a create the cache had not shown yet) is
        deleted on the next sync."""
        ns = agent.namespace
        todo, pod = self._plan(agent, capabilities, size)
        for name in todo.delete:
            if (ns, name) in self.rt.warm_taken:  # a claim got to it during an await of this loop
                continue
            self.rt.warm_taken.add((ns, name))  # so no claim takes a pod on its way out
            try:
                deleted = await self.rt.kube.delete(path("v1", "pods", ns, name))
            except ApiError:
                self.rt.warm_taken.discard((ns, name))
                raise
            if not deleted:  # already gone: the watch may have said so before this mark
                self.rt.warm_taken.discard((ns, name))
        for _ in range(todo.create):
            try:
                created = await self.rt.kube.create(path("v1", "pods", ns), pod)
            except ApiError as e:
                if e.status == 403 and "exceeded quota" in e.message:
                    # Idle pods count against the namespace's quota like goal pods: goals come first.
                    self.rt.events.record(raw, "Warning", "WarmPoolQuotaExceeded",
                                          f"Agent {ns}/{agent.name}: a warm pod would exceed a ResourceQuota "
                                          f"(spec.warmPool {size}): {e.message}")
                    break
                raise
            if created is not None:  # counted until the watch shows it, so the next sync adds no other
                self.rt.warm_starting[(ns, agent.name)][created["metadata"]["name"]] = time.monotonic()
        return len(todo.idle)

    async def claim(self, goal: Goal, agent: Agent, capabilities: list[Capability], attempt: int,
                    reserved: str) -> str | None:
        """Make an idle pod of the pool the goal's pod of `attempt`; None when there is none. The
        slot the caller holds under the name `reserved` (in rt.inflight) moves to the claimed pod."""
        if not serves(agent, goal):
            return None
        ns = goal.namespace
        inflight = self.rt.inflight[(ns, agent.name)]
        todo, _ = self._plan(agent, capabilities, agent.spec.warm_pool)
        for name in todo.idle:
            pod = self.rt.one("warmpods", (ns, name))
            if pod is None or (ns, name) in self.rt.warm_taken:  # taken by a reconcile during our await
                continue
            self.rt.warm_taken.add((ns, name))
            inflight.add(name)  # before the patch: its watch event may come before the reply
            try:
                await self.rt.kube.merge_patch(path("v1", "pods", ns, name), claim_patch(pod, goal, attempt))
            except ApiError as e:
                inflight.discard(name)
                self.rt.warm_taken.discard((ns, name))
                if e.status in (404, 409):  # deleted, or changed since the cache saw it: try the next
                    continue
                raise
            inflight.discard(reserved)
            self.rt.agents.add((ns, agent.name))  # refill behind the claim
            return name
        return None

    def pod_changed(self, event: str, raw: Raw, old: Raw | None) -> None:
        """A warm pod came, went (claimed or deleted) or changed phase: its Agent refills its pool
        and shows the count."""
        meta = raw["metadata"]
        agent = (meta.get("labels") or {}).get(LABEL_AGENT)
        self.rt.warm_starting.get((meta.get("namespace") or "", agent or ""), {}).pop(meta["name"], None)
        if event == "DELETED":
            self.rt.warm_taken.discard((meta.get("namespace") or "", meta["name"]))  # the watch shows the claim: the cache knows
        elif event == "MODIFIED" and old is not None and pod_outcome(old) == pod_outcome(raw) \
                and _ready(old) == _ready(raw):
            return
        if agent:
            self.rt.agents.add((meta.get("namespace") or "", agent))

