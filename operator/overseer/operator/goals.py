"""Goal reconciliation: resolve the agent, wait for dependencies, queue, run one pod per
attempt, retry with backoff, time out, and let the pod's phase drive the goal's.

The phase is the operator's: it acts on a phase only as it wrote it (trust.py), and otherwise
works it out again from the goal's pods, spec and dependencies."""

from __future__ import annotations

import heapq
import logging
from datetime import datetime, timedelta, timezone
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from overseer.api import Agent, Capability, Goal, Phase, parse_duration, queue_key
from overseer.approvals import APPROVE, DENY, decision, record_decisions
from overseer.contract import ExitCode
from overseer.api.meta import LABEL_ATTEMPT, LABEL_GOAL

from . import dispatch, subgoals, trust
from .agent_resources import child_name
from .capabilities import needed
from .conditions import condition, is_true, same_conditions, set_condition, summarize_goal
from .dispatch import TERMINAL
from . import metrics
from .modification_store import ModificationStore, approved_requests, describe
from overseer.kube import ApiError, now_iso, parse_time, path
from .pods import render_pod
from .runtime import Key, Raw, Runtime, goal_path
from .workspace import WorkspaceState, claim_name, render_claim, workspace_state

logger = logging.getLogger(__name__)

LIVE = {Phase.RUNNING.value, Phase.AWAITING_APPROVAL.value}
# A parent that ended in one of these has nobody left to read its sub-goals' results.
STOPS_SUBGOALS = {Phase.CANCELLED.value, Phase.FAILED.value}
QUEUE_SWEEP_SECONDS = 10.0
WAITING_FOR_SLOT = {"Queued", "QuotaExceeded"}  # Queued reasons that count as queue wait (not a retry's backoff)


def running_message(attempt: int, pod: str, agent: str | None) -> str:
    """The one wording of a running attempt: dispatch and the pod watch must agree on it, or
    each would rewrite the other's status."""
    return f"attempt {attempt} running in pod {pod}" + (f" as {child_name(agent)}" if agent else "")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class GoalReconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.modifications = ModificationStore(rt.kube)
        self._ignored: set[tuple[str | None, str | None]] = set()  # (uid, phase) already warned about
        self.queue_wait = metrics.QueueWait()

    # ---- reading the caches -------------------------------------------------------------

    def goal(self, ns: str, name: str) -> Raw | None:
        return self.rt.one("goals", (ns, name))

    def pods(self, ns: str, name: str) -> list[Raw]:
        return sorted(self.rt.by("pods", "goal", (ns, name)), key=lambda p: dispatch.attempt_of(p, LABEL_ATTEMPT))

    def resolve_agent(self, goal: Goal, raw: Raw) -> tuple[Raw | None, str]:
        """The goal's Agent, or None and a message naming the field to fix."""
        ns = goal.namespace
        if goal.spec.agent_ref is not None:
            name = goal.spec.agent_ref.name
            agent = self.rt.one("agents", (ns, name))
            if agent is None:
                return None, (f"Goal {ns}/{goal.name}: spec.agentRef.name {name!r} does not exist in "
                              f"namespace {ns}; create the Agent or fix the name")
            return agent, ""
        selector = goal.spec.agent_selector.to_api() if goal.spec.agent_selector else {}
        assigned = (raw.get("status") or {}).get("agent")
        matching = [a for a in self.rt.by("agents", "namespace", ns)
                    if dispatch.selector_matches(selector, a["metadata"].get("labels") or {})]
        if not matching:
            return None, (f"Goal {ns}/{goal.name}: spec.agentSelector matches no Agent in namespace {ns}; "
                          f"label an Agent or change the selector")
        for a in matching:
            if a["metadata"]["name"] == assigned:
                return a, ""
        ready = [a for a in matching if is_true((a.get("status") or {}).get("conditions") or [], "Ready")] or matching
        best = min(ready, key=lambda a: (self.rt.live_pods_of_agent(ns, a["metadata"]["name"]), a["metadata"]["name"]))
        return best, ""

    # ---- writing ------------------------------------------------------------------------

    async def update(self, raw: Raw, phase: Phase, reason: str, message: str,
                     conditions: Sequence[tuple[str, bool, str, str]] = (), event_type: str = "Normal",
                     **fields: Any) -> None:
        """Write the goal's status (only what changed) and an Event when the phase moves."""
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

    async def delete_live_pods(self, pods: list[Raw]) -> None:
        for pod in pods:
            if dispatch.pod_outcome(pod).state == "live":
                meta = pod["metadata"]
                await self.rt.kube.delete(path("v1", "pods", meta["namespace"], meta["name"]))

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
        now = _iso(_now())
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
        try:
            goal = Goal.model_validate(raw)
        except ValidationError as e:  # stored before the CRD refused it, or by an older CRD
            await self.invalid(raw, e)
            return None
        status = raw.get("status") or {}
        phase = trust.trusted_phase(raw)
        if phase is None:
            self.phase_ignored(raw)
            phase = Phase.PENDING.value
        pods = self.pods(ns, name)

        if phase in TERMINAL:
            await self.delete_live_pods(pods)  # a cancel or timeout may have died before the delete
            await self.settle(raw)
            return None

        if goal.spec.cancel:
            await self.delete_live_pods(pods)
            await self.update(raw, Phase.CANCELLED, "Cancelled", "spec.cancel is true; the goal was stopped",
                              [("Complete", False, "Cancelled", "cancelled by spec.cancel")],
                              completedAt=now_iso())
            return None
        parent = self.goal(ns, goal.spec.parent) if goal.spec.parent else None
        parent_phase = trust.trusted_phase(parent) if parent else None
        if parent_phase in STOPS_SUBGOALS:
            msg = f"parent goal {goal.spec.parent} is {parent_phase}; the sub-goal was stopped"
            await self.delete_live_pods(pods)
            await self.update(raw, Phase.CANCELLED, "ParentEnded", msg, [("Complete", False, "ParentEnded", msg)],
                              completedAt=now_iso())
            return None

        now = _now()
        next_look: float | None = None
        if goal.spec.timeout and status.get("startedAt"):
            deadline = parse_time(status["startedAt"]) + parse_duration(goal.spec.timeout)
            if now >= deadline:
                await self.delete_live_pods(pods)
                msg = f"did not finish within spec.timeout {goal.spec.timeout}"
                await self.update(raw, Phase.FAILED, "Timeout", msg, [("Complete", False, "Timeout", msg)],
                                  event_type="Warning", completedAt=now_iso())
                return None
            next_look = (deadline - now).total_seconds() + 0.5

        attempt = int(status.get("attempt") or 0)
        latest = pods[-1] if pods else None
        latest_attempt = dispatch.attempt_of(latest, LABEL_ATTEMPT) if latest else 0
        agent_name = (latest or {}).get("metadata", {}).get("labels", {}).get("overseer.dev/agent") \
            or status.get("agent")
        if latest is not None and latest_attempt >= attempt:
            outcome = dispatch.pod_outcome(latest)
            if outcome.state == "live":
                return await self.running(raw, latest, latest_attempt, agent_name, next_look)
            if outcome.state == "succeeded":
                await self.update(raw, Phase.SUCCEEDED, "Succeeded",
                                  f"attempt {latest_attempt} succeeded",
                                  [("Complete", True, "Succeeded", f"pod {latest['metadata']['name']} succeeded")],
                                  agent=agent_name, pod=latest["metadata"]["name"], attempt=latest_attempt,
                                  lastExitCode=outcome.exit_code, completedAt=now_iso(),
                                  startedAt=status.get("startedAt") or now_iso())
                return None
            if outcome.reason.split(":")[0] in dispatch.STUCK_WAITING and not latest["metadata"].get("deletionTimestamp"):
                # it would wait for ever, holding a slot of the namespace's quota
                await self.rt.kube.delete(path("v1", "pods", ns, latest["metadata"]["name"]))
            if latest_attempt > attempt or phase in LIVE or not self.retryable(goal, latest_attempt, outcome):
                return await self.attempt_failed(raw, goal, latest_attempt, outcome.reason, outcome.exit_code,
                                                 latest["metadata"]["name"])
        elif phase in LIVE and status.get("pod") and status["pod"] not in self.rt.inflight.get((ns, agent_name or ""), ()):
            return await self.attempt_failed(raw, goal, attempt, "PodLost", None, status["pod"])

        if goal.spec.parent and attempt == 0:
            refused = self.subgoal_refusal(raw, parent)
            if refused is not None:
                await self.update(raw, Phase.FAILED, refused.reason, refused.message,
                                  [("Complete", False, refused.reason, refused.message)], event_type="Warning",
                                  completedAt=now_iso())
                return None
        return await self.dispatch(raw, goal, attempt, now, next_look)

    async def invalid(self, raw: Raw, error: ValidationError) -> None:
        """A goal whose spec the operator cannot read can never run: it fails, naming the fields.
        (A phase the operator wrote as terminal stays as it is.)"""
        if trust.trusted_phase(raw) in TERMINAL:
            return
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors()[:5])
        msg = f"Goal {ns}/{name}: {fields}; fix the spec and create the goal again"
        await self.update(raw, Phase.FAILED, "InvalidSpec", msg, [("Complete", False, "InvalidSpec", msg)],
                          event_type="Warning", completedAt=now_iso())

    def phase_ignored(self, raw: Raw) -> None:
        """Say once per forged value that status.phase was written by someone else."""
        status = raw.get("status") or {}
        mark = (raw["metadata"].get("uid"), status.get("phase"))
        if mark in self._ignored:
            return
        self._ignored.add(mark)
        writers = ", ".join(sorted(trust.written_by_others(raw, "phase")))
        self.rt.events.record(raw, "Warning", "PhaseIgnored",
                              f"status.phase {status.get('phase')} was written by {writers}, not the operator; "
                              f"ignored: the phase is worked out again from the goal's pods")

    @staticmethod
    def retryable(goal: Goal, attempt: int, outcome: dispatch.PodOutcome) -> bool:
        """Whether a failed attempt may be followed by another: read from the pod and the spec,
        whatever the status says."""
        return outcome.exit_code != ExitCode.GAVE_UP and attempt <= goal.spec.max_retries

    def subgoal_refusal(self, raw: Raw, parent: Raw | None) -> subgoals.Refusal | None:
        ns = raw["metadata"]["namespace"]
        parent_name = (raw.get("spec") or {}).get("parent")
        siblings = [g for g in self.rt.by("goals", "parent", (ns, parent_name))
                    if g["metadata"]["name"] != raw["metadata"]["name"]]
        return subgoals.refusal(raw, parent, lambda agent: self.rt.one("agents", (ns, agent)), siblings,
                                trust.trusted_phase, subgoals.depth(raw, lambda goal: self.goal(ns, goal)))

    async def running(self, raw: Raw, pod: Raw, attempt: int, agent_name: str | None,
                      next_look: float | None) -> float | None:
        """A live pod works on the goal: Running, or AwaitingApproval while the agent waits for a
        person. Also adopts a pod created just before a crash, before its status was written."""
        status = raw.get("status") or {}
        name, pod_name = raw["metadata"]["name"], pod["metadata"]["name"]
        pending = [p for p in status.get("pendingApprovals") or [] if decision(raw, p["id"]) is None]
        if pending:
            first = pending[0]["id"]
            phase, reason = Phase.AWAITING_APPROVAL, "ApprovalRequested"
            message = (f"{pending[0].get('summary', first)} -- approve with: kubectl annotate goal/{name} "
                       f"{APPROVE}={first} (or {DENY}={first})")
        else:
            phase, reason = Phase.RUNNING, "Running"
            message = running_message(attempt, pod_name, agent_name)
        timeout = self.rt.settings.heartbeat_timeout_seconds
        beat = status.get("heartbeat") or pod["metadata"].get("creationTimestamp")
        if timeout and not pending and beat and (_now() - parse_time(beat)).total_seconds() > timeout:
            msg = f"no heartbeat from pod {pod_name} since {beat}; replacing it"
            self.rt.events.record(raw, "Warning", "HeartbeatLost", msg)
            metrics.HEARTBEATS_LOST.inc()
            await self.delete_live_pods([pod])
            return 1.0
        await self.store_modifications(raw, agent_name)
        extra = self.decisions(raw)
        conditions = [("Dispatched", True, "PodCreated", pod_name)]
        agent_raw = self.rt.one("agents", (raw["metadata"]["namespace"], agent_name)) if agent_name else None
        if agent_raw is not None:
            ws = self.workspace(Goal.model_validate(raw), Agent.model_validate(agent_raw))
            conditions += [ws.condition] if ws.condition else []
            extra.update(self.workspace_fields(raw, ws))
        await self.update(raw, phase, reason, message, conditions, agent=agent_name, pod=pod_name,
                          attempt=attempt, startedAt=status.get("startedAt") or now_iso(), **extra)
        if timeout and not pending:
            next_look = min(next_look, timeout) if next_look else timeout
        return next_look

    def workspace(self, goal: Goal, agent: Agent) -> WorkspaceState:
        """The goal's workspace as the claim caches show it."""
        ns = goal.namespace
        source = goal.spec.workspace_from
        return workspace_state(goal, agent, self.rt.one("persistentvolumeclaims", (ns, claim_name(goal.name))),
                               self.rt.one("persistentvolumeclaims", (ns, claim_name(source.goal))) if source else None)

    @staticmethod
    def workspace_fields(raw: Raw, ws: WorkspaceState) -> dict[str, Any]:
        """{"workspace": ...} when status.workspace should change."""
        return {"workspace": ws.status} if ws.status != (raw.get("status") or {}).get("workspace") else {}

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

    async def attempt_failed(self, raw: Raw, goal: Goal, attempt: int, reason: str, exit_code: int | None,
                             pod: str) -> float | None:
        status = raw.get("status") or {}
        detail = f"pod {pod} {'exited with code ' + str(exit_code) if exit_code is not None else reason}"
        if exit_code == ExitCode.RETRY and status.get("failureReason"):
            # The agent ended the attempt itself and said why (a pod killed says nothing, and the
            # reason in status may then be an earlier attempt's).
            said = trust.failure_reason(status.get("failureReason"), "")
            detail = f"{said}: {str(status.get('result') or '')[:300]}; {detail}" if said else detail
        if exit_code == ExitCode.GAVE_UP:
            # The agent stopped for a reason a retry cannot fix (budget spent, refusal, ...).
            why = trust.failure_reason(status.get("failureReason"), "AgentGaveUp")
            msg = f"attempt {attempt}: {status.get('result') or why} ({detail}); not retried"
            await self.update(raw, Phase.FAILED, why, msg, [("Complete", False, why, msg)], event_type="Warning",
                              attempt=attempt, pod=pod, lastExitCode=exit_code, completedAt=now_iso())
            return None
        if attempt > goal.spec.max_retries:
            msg = f"attempt {attempt} failed ({detail}); no retries left (spec.maxRetries {goal.spec.max_retries})"
            await self.update(raw, Phase.FAILED, "RetriesExhausted", msg,
                              [("Complete", False, "RetriesExhausted", msg)], event_type="Warning",
                              attempt=attempt, pod=pod, lastExitCode=exit_code, completedAt=now_iso())
            return None
        delay = dispatch.backoff_seconds(attempt, self.rt.settings.retry_backoff_seconds,
                                         self.rt.settings.retry_backoff_max_seconds)
        retry_at = _now() + timedelta(seconds=delay)
        msg = f"attempt {attempt} failed ({detail}); retrying at {_iso(retry_at)}"
        metrics.RETRIES.inc()
        await self.update(raw, Phase.QUEUED, "AttemptFailed", msg,
                          [("Dispatched", False, "RetryBackoff", msg)], event_type="Warning",
                          attempt=attempt, pod=pod, lastExitCode=exit_code, retryAt=_iso(retry_at),
                          startedAt=status.get("startedAt") or now_iso())
        return delay + 0.5

    async def dispatch(self, raw: Raw, goal: Goal, attempt: int, now: datetime,
                       next_look: float | None) -> float | None:
        ns, name = goal.namespace, goal.name
        status = raw.get("status") or {}
        agent_raw, problem = self.resolve_agent(goal, raw)
        if agent_raw is None:
            await self.update(raw, Phase.PENDING, "AgentNotFound", problem,
                              [("Dispatched", False, "AgentNotFound", problem)], event_type="Warning")
            return None
        agent_name = agent_raw["metadata"]["name"]
        agent_conditions = (agent_raw.get("status") or {}).get("conditions") or []
        if not is_true(agent_conditions, "Ready"):
            why = next((c.get("message") for c in agent_conditions if c.get("type") == "Ready"), "") or "not reconciled yet"
            msg = f"Agent {agent_name} is not Ready: {why}"
            await self.update(raw, Phase.PENDING, "AgentNotReady", msg,
                              [("Dispatched", False, "AgentNotReady", msg)], agent=agent_name)
            return None

        deps = dispatch.check_dependencies(
            name, goal.spec.depends_on,
            # A dependency counts as it stands in the operator's own record, never as another wrote it.
            phase_of=lambda n: (trust.trusted_phase(dep) or Phase.PENDING.value)
            if (dep := self.goal(ns, n)) is not None else None,
            depends_on_of=lambda n: ((self.goal(ns, n) or {}).get("spec") or {}).get("dependsOn") or [],
        )
        if deps.cycle:
            msg = "spec.dependsOn forms a cycle: " + dispatch.describe_cycle(deps.cycle)
            await self.update(raw, Phase.FAILED, "DependencyCycle", msg,
                              [("DependenciesMet", False, "DependencyCycle", msg), ("Complete", False, "DependencyCycle", msg)],
                              event_type="Warning", agent=agent_name, completedAt=now_iso())
            return None
        if deps.failed:
            msg = f"dependencies failed: {', '.join(deps.failed)}"
            await self.update(raw, Phase.FAILED, "DependencyFailed", msg,
                              [("DependenciesMet", False, "DependencyFailed", msg), ("Complete", False, "DependencyFailed", msg)],
                              event_type="Warning", agent=agent_name, completedAt=now_iso())
            return None
        if deps.waiting:
            msg = f"waiting for {', '.join(deps.waiting)}"
            await self.update(raw, Phase.BLOCKED, "Blocked", msg,
                              [("DependenciesMet", False, "Waiting", msg), ("Dispatched", False, "DependenciesPending", msg)],
                              agent=agent_name, waitingFor=deps.waiting)
            return None
        dep_condition = [("DependenciesMet", True, "Succeeded", "all dependencies succeeded")] if goal.spec.depends_on else []
        agent = Agent.model_validate(agent_raw)
        ws = self.workspace(goal, agent)
        if ws.blocked:
            await self.update(raw, Phase.FAILED, "SourceClaimMissing", ws.blocked,
                              [*dep_condition, *([ws.condition] if ws.condition else []),
                               ("Complete", False, "SourceClaimMissing", ws.blocked)],
                              event_type="Warning", agent=agent_name, completedAt=now_iso())
            return None

        if status.get("retryAt") and parse_time(status["retryAt"]) > now:
            wait = (parse_time(status["retryAt"]) - now).total_seconds() + 0.5
            return min(wait, next_look) if next_look else wait

        if attempt >= 1 and await self.live_pod_on_server(ns, name):
            return 1.0  # the watch has not shown it yet: never start a second attempt beside it
        await self.ensure_claim(goal, agent)

        # From counting the free slots to reserving one there is no await, so no other reconcile
        # can take the same slot: pod creates of one agent still run side by side.
        limit = int((agent_raw.get("spec") or {}).get("maxConcurrentGoals", 1))
        free = limit - self.rt.live_pods_of_agent(ns, agent_name)
        me = queue_key(raw)
        ahead = 0
        if free > 0:
            for other in self.rt.by("goals", "queued", (ns, agent_name)):
                ost = other.get("status") or {}
                if (other["metadata"]["name"] != name and ost.get("phase") == Phase.QUEUED.value
                        and not (ost.get("retryAt") and parse_time(ost["retryAt"]) > now)
                        and queue_key(other) < me):
                    ahead += 1
                    if ahead >= free:
                        break
        if free <= 0 or ahead >= free:
            msg = f"waiting for a free slot of agent {agent_name} (maxConcurrentGoals {limit})"
            await self.update(raw, Phase.QUEUED, "Queued", msg,
                              [*dep_condition, ("Dispatched", False, "WaitingForSlot", msg)],
                              agent=agent_name, waitingFor=[])
            return next_look  # a freed slot wakes the queue (wake_queue, sweep_queues)
        pod = render_pod(goal, agent, attempt + 1, self.rt.settings,
                         [Capability.model_validate(c) for _, c in needed(self.rt, ns, agent.spec.capabilities).values()
                          if c is not None],
                         source_claim=(ws.status or {}).get("sourceClaim"))
        pod_name = pod["metadata"]["name"]
        self.rt.inflight[(ns, agent_name)].add(pod_name)
        try:
            await self.rt.kube.create(path("v1", "pods", ns), pod)
        except ApiError as e:
            self.rt.inflight[(ns, agent_name)].discard(pod_name)
            if e.status == 403 and "exceeded quota" in e.message:
                # The namespace's ResourceQuota is full: wait like any other queued goal.
                msg = f"pod {pod_name} would exceed a ResourceQuota: {e.message}"
                await self.update(raw, Phase.QUEUED, "QuotaExceeded", msg,
                                  [*dep_condition, ("Dispatched", False, "QuotaExceeded", msg)],
                                  event_type="Warning", agent=agent_name, waitingFor=[])
                return self.rt.settings.retry_backoff_seconds
            self.rt.events.record(raw, "Warning", "PodCreateFailed", f"pod {pod_name}: {e}")
            raise
        except Exception:
            self.rt.inflight[(ns, agent_name)].discard(pod_name)
            raise
        if free > 1:
            self.wake_queue(ns, agent_name)  # slots remain: goals queued behind this one may go too
        if attempt == 0:
            metrics.observe_start(raw)
        metrics.ATTEMPTS.inc()
        self.queue_wait.dispatched(raw["metadata"].get("uid") or "")
        started = status.get("startedAt") or now_iso()
        await self.update(raw, Phase.RUNNING, "Dispatched",
                          running_message(attempt + 1, pod_name, agent_name),
                          [*dep_condition, *([ws.condition] if ws.condition else []),
                           ("Dispatched", True, "PodCreated", pod_name)],
                          agent=agent_name, pod=pod_name, attempt=attempt + 1, startedAt=started,
                          waitingFor=[], retryAt=None, **self.workspace_fields(raw, ws))
        # The pod's own ADDED event brings no reconcile (pod_recorded), so this is the next look:
        # the heartbeat check, or the timeout if that comes first.
        looks = [self.rt.settings.heartbeat_timeout_seconds] if self.rt.settings.heartbeat_timeout_seconds else []
        if goal.spec.timeout:
            looks.append((parse_time(started) + parse_duration(goal.spec.timeout) - now).total_seconds() + 0.5)
        return min(looks) if looks else None

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
