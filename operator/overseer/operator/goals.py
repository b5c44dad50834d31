"""Goal reconciliation: the I/O around the lifecycle. lifecycle.py decides, from the caches,
what a goal's next status is and what to do; this module reads the goal and its pods, then
records events, deletes pods, writes status and starts attempts (workspace claim, a free slot,
the pod), asking the lifecycle again at each step of a start.

The phase is the operator's: it acts on a phase only as it wrote it (trust.py), and otherwise
works it out again from the goal's pods, spec and dependencies."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any

from overseer.api import Agent, Capability, Goal, Phase, queue_key
from overseer.approvals import record_decisions
from overseer.api.meta import LABEL_ATTEMPT, LABEL_GOAL

from . import dispatch, lifecycle, trust
from .capabilities import needed
from .conditions import condition, same_conditions, set_condition, shorten, summarize_goal
from . import metrics
from .lifecycle import WAITING_FOR_SLOT, Decision
from .modification_store import ModificationStore, approved_requests, describe
from overseer.kube import ApiError, path
from .pods import render_pod
from .runtime import Key, Raw, Runtime, goal_path
from .warm_pool import WarmPool
from .workspace import claim_name, render_claim

logger = logging.getLogger(__name__)

QUEUE_SWEEP_SECONDS = 10.0


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class CacheView:
    """lifecycle.Cluster: the runtime's caches, in one namespace."""

    def __init__(self, rt: Runtime, ns: str) -> None:
        self.rt, self.ns = rt, ns

    def goal(self, name: str) -> Raw | None:
        return self.rt.one("goals", (self.ns, name))

    def agent(self, name: str) -> Raw | None:
        return self.rt.one("agents", (self.ns, name))

    def agents(self) -> list[Raw]:
        return self.rt.by("agents", "namespace", self.ns)

    def live_pods(self, agent: str) -> int:
        return self.rt.live_pods_of_agent(self.ns, agent)

    def in_flight(self, agent: str) -> Collection[str]:
        return self.rt.inflight.get((self.ns, agent), ())

    def queued(self, agent: str) -> list[Raw]:
        return self.rt.by("goals", "queued", (self.ns, agent))

    def subgoals(self, parent: str) -> list[Raw]:
        return self.rt.by("goals", "parent", (self.ns, parent))

    def pods(self, goal: str) -> list[Raw]:
        return self.rt.by("pods", "goal", (self.ns, goal))

    def claim(self, name: str) -> Raw | None:
        return self.rt.one("persistentvolumeclaims", (self.ns, name))


class GoalReconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.modifications = ModificationStore(rt.kube)
        self._ignored: set[tuple[str | None, str | None]] = set()  # (uid, phase) already warned about
        self.queue_wait = metrics.QueueWait()
        self.pool = WarmPool(rt)

    # ---- reading the caches -------------------------------------------------------------

    def goal(self, ns: str, name: str) -> Raw | None:
        return self.rt.one("goals", (ns, name))

    def pods(self, ns: str, name: str) -> list[Raw]:
        return sorted(self.rt.by("pods", "goal", (ns, name)), key=lambda p: dispatch.attempt_of(p, LABEL_ATTEMPT))

    # ---- writing ------------------------------------------------------------------------

    async def update(self, raw: Raw, phase: Phase, reason: str, message: str,
                     conditions: Sequence[tuple[str, bool, str, str]] = (), event_type: str = "Normal",
                     **fields: Any) -> None:
        """Write the goal's status (only what changed) and an Event when the phase moves."""
        message = shorten(message)  # as stored, so that an unchanged message compares equal
        status = raw.get("status") or {}
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        generation = raw["metadata"].get("generation")
        conds = list(status.get("conditions") or [])
        for ctype, cstatus, creason, cmessage in conditions:
            conds = set_condition(conds, ctype, cstatus, creason, cmessage, generation)
        conds = summarize_goal(conds, phase.value, reason, message, generation)
        changes: dict[str, Any] = {"phase": phase.value, "message": message, "observedGeneration": generation}
        if not same_conditions(conds, status.get("conditions") or []):
            changes["conditions"] = conds
        changes.update(fields)
        moved = status.get("phase", Phase.PENDING.value) != phase.value or (
            "attempt" in fields and fields["attempt"] != status.get("attempt"))
        await self.rt.patch_status(goal_path(ns, name, "status"), raw, changes)
        uid = raw["metadata"].get("uid") or ""
        if phase == Phase.QUEUED and reason in WAITING_FOR_SLOT:
            self.queue_wait.queued(uid)
        elif phase.terminal and moved:
            self.queue_wait.forget(uid)
            metrics.observe_end(raw, phase.value)
        if moved or (status.get("message") != message and event_type == "Warning"):
            self.rt.events.record(raw, event_type, reason, message)

    async def settle(self, raw: Raw) -> None:
        """A finished goal runs no more, but still says it saw its latest spec (observedGeneration),
        or kstatus would call it in progress for ever after an edit."""
        status = raw.get("status") or {}
        generation = raw["metadata"].get("generation")
        old = status.get("conditions") or []
        ended = condition(old, "Complete") or {}
        conds = summarize_goal(list(old), status["phase"], ended.get("reason") or status["phase"],
                               status.get("message") or "", generation)
        if status.get("observedGeneration") != generation or not same_conditions(conds, old):
            ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
            await self.rt.patch_status(goal_path(ns, name, "status"), raw,
                                       {"observedGeneration": generation, "conditions": conds})

    async def live_pod_on_server(self, ns: str, name: str) -> bool:
        """Whether the API server (not the cache) has a live pod of this goal. Read only before a
        retry: a first attempt's pod name is enough to make its creation idempotent."""
        pods = await self.rt.kube.get(path("v1", "pods", ns), params={"labelSelector": f"{LABEL_GOAL}={name}"})
        return any(dispatch.pod_outcome(p).state == "live" for p in (pods or {}).get("items", []))

    def wake_queue(self, ns: str, agent: str) -> None:
        """Slots of agent may have freed up: reconcile as many goals, first in its queue, as there
        are free slots (goals waiting out a retry backoff have their own timers)."""
        raw_agent = self.rt.one("agents", (ns, agent))
        limit = int(((raw_agent or {}).get("spec") or {}).get("maxConcurrentGoals", 1))
        free = limit - self.rt.live_pods_of_agent(ns, agent)
        if free <= 0:
            return
        now = lifecycle.iso(_now())
        queued = [g for g in self.rt.by("goals", "queued", (ns, agent))
                  if (g.get("status") or {}).get("phase") == Phase.QUEUED.value
                  and not (g.get("status") or {}).get("retryAt", "") > now]
        for g in heapq.nsmallest(free, queued, key=queue_key):
            self.rt.goals.add((ns, g["metadata"]["name"]))

    def sweep_queues(self) -> None:
        """Wake every agent's queue. Slots are freed by events that wake the queue; this sweep
        repairs a wake-up lost to a race (a goal written Queued just as the slot it waits for
        freed), at a cost that grows with the number of agents, not of queued goals."""
        for ns, agent in self.rt.keys("agents"):
            if self.rt.goal_counts(ns, agent)["queuedGoals"]:
                self.wake_queue(ns, agent)

    # ---- the reconcile --------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        raw = self.goal(ns, name)
        if raw is None:
            return None
        view = CacheView(self.rt, ns)
        now = _now()
        step = lifecycle.decide(raw, trust.trusted_phase(raw), self.pods(ns, name), view, now, self.rt.settings)
        return await self.apply(raw, step, view, now)

    async def apply(self, raw: Raw, step: Decision, view: CacheView, now: datetime) -> float | None:
        """Do what the lifecycle decided, in its order; returns when to look again."""
        for event in step.events:
            self.say(raw, event)
        for pod in step.delete:
            await self.rt.kube.delete(path("v1", "pods", raw["metadata"]["namespace"], pod))
        if step.settle:
            await self.settle(raw)
        if step.status is not None:
            await self.write(raw, step.status, step.approvals)
        if step.dispatch is not None:
            return await self.start(raw, step.dispatch, view, now)
        return step.requeue

    def say(self, raw: Raw, event: lifecycle.Event) -> None:
        """Record an event the lifecycle asked for; a forged phase is reported once per value."""
        if event.reason == lifecycle.PHASE_IGNORED:  # once per forged value
            mark = (raw["metadata"].get("uid"), (raw.get("status") or {}).get("phase"))
            if mark in self._ignored:
                return
            self._ignored.add(mark)
        elif event.reason == lifecycle.HEARTBEAT_LOST:
            metrics.HEARTBEATS_LOST.inc()
        self.rt.events.record(raw, event.type, event.reason, event.message)

    async def write(self, raw: Raw, to: lifecycle.Transition, approvals: bool) -> None:
        """Write the transition; a running goal's also stores approved modifications and records
        decisions (before them: the agent keeps its request in status until it sees its decision)."""
        fields = dict(to.fields)
        if approvals:
            await self.store_modifications(raw, fields.get("agent"))
            fields.update(self.decisions(raw))
        if to.reason == lifecycle.ATTEMPT_FAILED:
            metrics.RETRIES.inc()
        await self.update(raw, to.phase, to.reason, to.message, to.conditions,
                          "Warning" if to.warning else "Normal", **fields)

    async def start(self, raw: Raw, plan: lifecycle.Dispatch, view: CacheView, now: datetime) -> float | None:
        """Start the plan's attempt: unless a live pod the cache has not shown is there, make sure
        of the workspace claim, take a free slot of the agent (or queue), create the pod."""
        goal, agent = plan.goal, plan.agent
        ns, name = goal.namespace, goal.name
        if plan.retry and await self.live_pod_on_server(ns, name):
            return 1.0  # the watch has not shown it yet: never start a second attempt beside it
        await self.ensure_claim(goal, agent)

        # From counting the free slots to reserving one there is no await, so no other reconcile
        # can take the same slot: pod creates of one agent still run side by side.
        free = lifecycle.free_slots(raw, plan, view, now)
        if not free:
            return await self.apply(raw, lifecycle.waiting_for_slot(plan), view, now)
        caps = [Capability.model_validate(c) for _, c in needed(self.rt, ns, agent.spec.capabilities).values()
                if c is not None]
        pod = render_pod(goal, agent, plan.attempt, self.rt.settings, caps,
                         source_claim=(plan.workspace.status or {}).get("sourceClaim"))
        pod_name = pod["metadata"]["name"]
        self.rt.inflight[(ns, agent.name)].add(pod_name)
        try:
            claimed = await self.pool.claim(goal, agent, caps, plan.attempt, reserved=pod_name)
            if claimed is None:
                await self.rt.kube.create(path("v1", "pods", ns), pod, answer=False)
            pod_name = claimed or pod_name
        except ApiError as e:
            self.rt.inflight[(ns, agent.name)].discard(pod_name)
            if e.status == 403 and "exceeded quota" in e.message:
                return await self.apply(raw, lifecycle.quota_exceeded(plan, pod_name, e.message, self.rt.settings),
                                        view, now)
            self.rt.events.record(raw, "Warning", "PodCreateFailed", f"pod {pod_name}: {e}")
            raise
        except Exception:
            self.rt.inflight[(ns, agent.name)].discard(pod_name)
            raise
        if free > 1:
            self.wake_queue(ns, agent.name)  # slots remain: goals queued behind this one may go too
        if plan.attempt == 1:
            metrics.observe_start(raw)
        metrics.ATTEMPTS.inc()
        self.queue_wait.dispatched(raw["metadata"].get("uid") or "")
        return await self.apply(raw, lifecycle.dispatched(raw, plan, pod_name, now, self.rt.settings), view, now)

    async def ensure_claim(self, goal: Goal, agent: Agent) -> None:
        """Create the goal's claim before its first pod; one already there (the cache may lag, an
        operator may have died after creating it) is the goal's."""
        if agent.spec.workspace is None or self.rt.one("persistentvolumeclaims", (goal.namespace, claim_name(goal.name))):
            return
        try:
            await self.rt.kube.create(path("v1", "persistentvolumeclaims", goal.namespace), render_claim(goal, agent))
        except ApiError as e:
            if e.status != 409:
                raise

    def decisions(self, raw: Raw) -> dict[str, Any]:
        """{"decisions": [...]} when status.decisions should change: the decisions the operator
        recorded plus new ones from the annotations. Another writer's list is replaced."""
        current = (raw.get("status") or {}).get("decisions") or []
        uid = raw["metadata"].get("uid") or ""
        known = trust.trusted_decisions(raw, self.rt.decisions.get(uid))
        if current != known:
            writers = ", ".join(sorted(trust.written_by_others(raw, "decisions"))) or "another writer"
            forged = [str(d.get("id")) for d in current if d not in known]
            self.rt.events.record(raw, "Warning", "DecisionsRestored",
                                  f"status.decisions was changed by {writers}; restored the operator's record"
                                  + (f" (dropped {', '.join(forged)})" if forged else ""))
        decisions = record_decisions(raw, known, self.rt.admission.complete)
        if decisions:
            self.rt.decisions[uid] = decisions  # an erased list is restored while the operator runs
        return {"decisions": decisions} if decisions != current else {}

    async def store_modifications(self, raw: Raw, agent_name: str | None) -> None:
        """Store the self-modifications a person approved in the agent's ConfigMap. Runs before the
        decisions are recorded: the agent keeps its request in status until it sees its decision."""
        approved, problems = approved_requests(raw)
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        for problem in problems:
            self.rt.events.record(raw, "Warning", "ModificationRejected", f"Goal {ns}/{name}: {problem}")
        agent = self.rt.one("agents", (ns, agent_name)) if approved and agent_name else None
        if agent is None:
            return
        try:
            added = await self.modifications.store(agent, approved)
        except ApiError as e:
            if e.status >= 500:
                raise
            # Refused for good (too large for a ConfigMap, forbidden, ...): say so and let the
            # decisions be recorded, so the agent learns now that nothing was stored.
            self.rt.events.record(raw, "Warning", "ModificationNotStored",
                                          f"Goal {ns}/{name}: approved modifications not stored: {e}")
            return
        for item in approved:
            if item.id in added:
                self.rt.events.record(
                    agent, "Normal", "ModificationStored",
                    f"{describe(item.record)} proposed by goal {name}, approved by {item.record['approvedBy']}; "
                    f"later goals use it (revert: kubectl annotate agent/{agent_name} overseer.dev/revert={item.id})")
        if added:
            self.rt.agents.add((ns, agent_name))  # its count of modifications

    def pod_recorded(self, pod: Raw) -> bool:
        """Whether a newly seen live pod is the one the goal's status already names, as dispatch
        writes it: then there is nothing to reconcile."""
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        raw = self.goal(meta.get("namespace") or "", labels.get(LABEL_GOAL, ""))
        status = (raw or {}).get("status") or {}
        return (status.get("phase") == Phase.RUNNING.value and status.get("pod") == meta["name"]
                and str(status.get("attempt")) == labels.get(LABEL_ATTEMPT)
                and dispatch.pod_outcome(pod).state == "live")
