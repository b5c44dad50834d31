"""The Goal lifecycle, decided without I/O: from what is observed of a goal (its spec, the phase the
operator wrote, its pods, its Agent, its dependencies and parent, the time) to the status it should
have next and what must be done to get there.

goals.py reads the caches, calls decide(), and does what the Decision says. Starting an attempt
takes I/O in the middle (a look at the API server, the workspace claim, a free slot counted and
reserved with no await in between, the pod create), so decide() returns a Dispatch plan and the
reconciler asks again at each step: free_slots(), then waiting_for_slot(), dispatched() or
quota_exceeded(). Nothing here writes, awaits or reads a clock; the caches are read through a
read-only Cluster view, so a running goal's reconcile never pays for a dependency walk it does
not need."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from overseer.api import Agent, Goal, Phase, parse_duration, queue_key
from overseer.api.meta import LABEL_AGENT, LABEL_ATTEMPT
from overseer.approvals import APPROVE, DENY, decision
from overseer.contract import AGENT_CONTAINER, ExitCode
from overseer.kube import parse_time

from . import dispatch, subgoals, trust
from .agent_resources import child_name
from .conditions import is_true
from .dispatch import TERMINAL, PodOutcome
from .settings import Settings
from .workspace import WorkspaceState, claim_name, workspace_state

Raw = dict[str, Any]
Condition = tuple[str, bool, str, str]  # type, status, reason, message

LIVE = {Phase.RUNNING.value, Phase.AWAITING_APPROVAL.value}
# A parent that ended in one of these has nobody left to read its sub-goals' results.
STOPS_SUBGOALS = {Phase.CANCELLED.value, Phase.FAILED.value}
WAITING_FOR_SLOT = {"Queued", "QuotaExceeded"}  # Queued reasons that count as queue wait (not a retry's backoff)
ATTEMPT_FAILED = "AttemptFailed"  # the reason of a failed attempt that will be retried
HEARTBEAT_LOST = "HeartbeatLost"
PHASE_IGNORED = "PhaseIgnored"
PARENT_STARTING = "ParentStarting"
PARENT_LOOK_SECONDS = 2.0  # until the parent's own reconcile has recorded the pod it runs in


class Cluster(Protocol):
    """What a decision may read of the caches, in the goal's namespace. Read-only."""

    def goal(self, name: str) -> Raw | None: ...

    def agent(self, name: str) -> Raw | None: ...

    def agents(self) -> list[Raw]: ...

    def live_pods(self, agent: str) -> int:
        """The agent's live pods, counting those created but not seen by the watch yet."""

    def in_flight(self, agent: str) -> Collection[str]:
        """Names of the agent's pods created but not seen by the watch yet."""

    def queued(self, agent: str) -> list[Raw]:
        """The goals whose status says they wait in the agent's queue."""

    def subgoals(self, parent: str) -> list[Raw]: ...

    def pods(self, goal: str) -> list[Raw]:
        """The goal's pods."""

    def claim(self, name: str) -> Raw | None: ...


@dataclass(frozen=True)
class Transition:
    """The status to write: a phase with its reason and message, conditions to set, other fields."""

    phase: Phase
    reason: str
    message: str
    conditions: tuple[Condition, ...] = ()
    warning: bool = False  # its Event is a Warning
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Dispatch:
    """Start attempt `attempt` of the goal on `agent` once one of its slots is free."""

    goal: Goal
    agent: Agent
    limit: int                    # the agent's maxConcurrentGoals
    attempt: int
    workspace: WorkspaceState
    conditions: tuple[Condition, ...]  # DependenciesMet, for goals with dependencies
    started_at: str               # status.startedAt: the first attempt's start
    next_look: float | None       # seconds until spec.timeout passes

    @property
    def retry(self) -> bool:
        """A retry: a pod of an earlier attempt may be live on the API server but not in the cache
        yet, and must never have a second attempt beside it."""
        return self.attempt > 1


@dataclass(frozen=True)
class Decision:
    """What to do, in this order: record events, delete pods, write status (or settle an ended
    goal's), start an attempt; then look again after `requeue` seconds (None: when something
    changes)."""

    events: tuple[Event, ...] = ()
    delete: tuple[str, ...] = ()  # pods of the goal, by name
    settle: bool = False          # an ended goal: only observedGeneration and its kstatus conditions
    status: Transition | None = None
    approvals: bool = False       # with the write: store approved self-modifications, record decisions
    dispatch: Dispatch | None = None
    requeue: float | None = None


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def running_message(attempt: int, pod: str, agent: str | None) -> str:
    """The one wording of a running attempt: dispatch and the pod watch must agree on it, or
    each would rewrite the other's status."""
    return f"attempt {attempt} running in pod {pod}" + (f" as {child_name(agent)}" if agent else "")


def _ended(phase: Phase, reason: str, message: str, now: datetime, *conditions: Condition, warning: bool = True,
           complete: str | None = None, **fields: Any) -> Transition:
    """A transition to a terminal phase, its reason also the Complete condition's (whose message
    is `complete`, else the phase's)."""
    done: Condition = ("Complete", phase == Phase.SUCCEEDED, reason, message if complete is None else complete)
    return Transition(phase, reason, message, (*conditions, done), warning, {**fields, "completedAt": iso(now)})


def decide(raw: Raw, phase: str | None, pods: Sequence[Raw], cluster: Cluster, now: datetime,
           settings: Settings) -> Decision:
    """The next step of the goal `raw`. phase is status.phase as the operator trusts it (None when
    another writer changed it); pods are the goal's, in attempt order."""
    try:
        goal = Goal.model_validate(raw)
    except ValidationError as e:  # stored before the CRD refused it, or by an older CRD
        return invalid(raw, phase, e, now)
    if phase is None:
        step = _decide(goal, raw, Phase.PENDING.value, pods, cluster, now, settings)
        return replace(step, events=(phase_ignored(raw), *step.events))
    return _decide(goal, raw, phase, pods, cluster, now, settings)


def invalid(raw: Raw, phase: str | None, error: ValidationError, now: datetime) -> Decision:
    """A goal whose spec the operator cannot read can never run: it fails, naming the fields.
    (A phase the operator wrote as terminal stays as it is.)"""
    if phase in TERMINAL:
        return Decision()
    ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    fields = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors()[:5])
    msg = f"Goal {ns}/{name}: {fields}; fix the spec and create the goal again"
    return Decision(status=_ended(Phase.FAILED, "InvalidSpec", msg, now))


def phase_ignored(raw: Raw) -> Event:
    status = raw.get("status") or {}
    writers = ", ".join(sorted(trust.written_by_others(raw, "phase")))
    return Event("Warning", PHASE_IGNORED,
                 f"status.phase {status.get('phase')} was written by {writers}, not the operator; "
                 f"ignored: the phase is worked out again from the goal's pods")


def _live(pods: Sequence[Raw]) -> tuple[str, ...]:
    return tuple(p["metadata"]["name"] for p in pods if dispatch.pod_outcome(p).state == "live")


def _decide(goal: Goal, raw: Raw, phase: str, pods: Sequence[Raw], cluster: Cluster, now: datetime,
            settings: Settings) -> Decision:
    status = raw.get("status") or {}
    if phase in TERMINAL:
        return Decision(delete=_live(pods), settle=True)  # a cancel or timeout may have died before the delete

    if goal.spec.cancel:
        return Decision(delete=_live(pods), status=_ended(
            Phase.CANCELLED, "Cancelled", "spec.cancel is true; the goal was stopped", now, warning=False,
            complete="cancelled by spec.cancel"))
    parent = cluster.goal(goal.spec.parent) if goal.spec.parent else None
    parent_phase = trust.trusted_phase(parent) if parent else None
    if parent_phase in STOPS_SUBGOALS:
        msg = f"parent goal {goal.spec.parent} is {parent_phase}; the sub-goal was stopped"
        return Decision(delete=_live(pods), status=_ended(Phase.CANCELLED, "ParentEnded", msg, now, warning=False))

    next_look: float | None = None
    if goal.spec.timeout and status.get("startedAt"):
        deadline = parse_time(status["startedAt"]) + parse_duration(goal.spec.timeout)
        if now >= deadline:
            msg = f"did not finish within spec.timeout {goal.spec.timeout}"
            return Decision(delete=_live(pods), status=_ended(Phase.FAILED, "Timeout", msg, now))
        next_look = (deadline - now).total_seconds() + 0.5

    attempt = int(status.get("attempt") or 0)
    latest = pods[-1] if pods else None
    latest_attempt = dispatch.attempt_of(latest, LABEL_ATTEMPT) if latest else 0
    agent_name: str | None = (latest or {}).get("metadata", {}).get("labels", {}).get(LABEL_AGENT) \
        or status.get("agent")
    stuck: tuple[str, ...] = ()
    if latest is not None and latest_attempt >= attempt:
        outcome = dispatch.pod_outcome(latest)
        pod = latest["metadata"]["name"]
        if outcome.state == "live":
            return running(goal, raw, latest, latest_attempt, agent_name, cluster, now, settings, next_look)
        if outcome.state == "succeeded":
            return Decision(status=_ended(
                Phase.SUCCEEDED, "Succeeded", f"attempt {latest_attempt} succeeded", now, warning=False,
                agent=agent_name, pod=pod, attempt=latest_attempt, lastExitCode=outcome.exit_code,
                complete=f"pod {pod} succeeded", startedAt=status.get("startedAt") or iso(now)))
        if outcome.reason.split(":")[0] in dispatch.STUCK_WAITING and not latest["metadata"].get("deletionTimestamp"):
            stuck = (pod,)  # it would wait for ever, holding a slot of the namespace's quota
        if latest_attempt > attempt or phase in LIVE or not retryable(goal, latest_attempt, outcome):
            return replace(attempt_failed(goal, raw, latest_attempt, outcome.reason, outcome.exit_code, pod,
                                          now, settings), delete=stuck)
    elif phase in LIVE and status.get("pod") and status["pod"] not in cluster.in_flight(agent_name or ""):
        return attempt_failed(goal, raw, attempt, "PodLost", None, status["pod"], now, settings)

    if goal.spec.parent and attempt == 0:
        if parent is not None and (parent_pod := subgoals.parent_pod_unrecorded(
                raw, parent, cluster.pods(goal.spec.parent), trust.trusted_phase)):
            msg = (f"parent goal {goal.spec.parent} runs in pod {parent_pod}, which its status does not name yet; "
                   f"the sub-goal checks wait for the operator to record it")
            return Decision(status=Transition(Phase.PENDING, PARENT_STARTING, msg,
                                              (("Dispatched", False, PARENT_STARTING, msg),)),
                            requeue=PARENT_LOOK_SECONDS)
        refused = subgoal_refusal(raw, parent, cluster)
        if refused is not None:
            return Decision(status=_ended(Phase.FAILED, refused.reason, refused.message, now))
    return replace(dispatch_step(goal, raw, attempt, cluster, now, next_look), delete=stuck)


def retryable(goal: Goal, attempt: int, outcome: PodOutcome) -> bool:
    """Whether a failed attempt may be followed by another: read from the pod and the spec,
    whatever the status says."""
    return outcome.exit_code != ExitCode.GAVE_UP and attempt <= goal.spec.max_retries


def attempt_failed(goal: Goal, raw: Raw, attempt: int, reason: str, exit_code: int | None, pod: str,
                   now: datetime, settings: Settings) -> Decision:
    """Attempt `attempt` failed: retried after a backoff, unless the agent gave up or no retries are left."""
    status = raw.get("status") or {}
    detail = f"pod {pod} {'exited with code ' + str(exit_code) if exit_code is not None else reason}"
    if exit_code == ExitCode.RETRY and status.get("failureReason"):
        # The agent ended the attempt itself and said why (a pod killed says nothing, and the
        # reason in status may then be an earlier attempt's).
        said = trust.failure_reason(status.get("failureReason"), "")
        detail = f"{said}: {str(status.get('result') or '')[:300]}; {detail}" if said else detail
    fields: dict[str, Any] = {"attempt": attempt, "pod": pod, "lastExitCode": exit_code}
    if exit_code == ExitCode.GAVE_UP:
        # The agent stopped for a reason a retry cannot fix (budget spent, refusal, ...).
        why = trust.failure_reason(status.get("failureReason"), "AgentGaveUp")
        msg = f"attempt {attempt}: {status.get('result') or why} ({detail}); not retried"
        return Decision(status=_ended(Phase.FAILED, why, msg, now, **fields))
    if attempt > goal.spec.max_retries:
        msg = f"attempt {attempt} failed ({detail}); no retries left (spec.maxRetries {goal.spec.max_retries})"
        return Decision(status=_ended(Phase.FAILED, "RetriesExhausted", msg, now, **fields))
    delay = dispatch.backoff_seconds(attempt, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds)
    retry_at = iso(now + timedelta(seconds=delay))
    msg = f"attempt {attempt} failed ({detail}); retrying at {retry_at}"
    return Decision(status=Transition(
        Phase.QUEUED, ATTEMPT_FAILED, msg, (("Dispatched", False, "RetryBackoff", msg),), True,
        {**fields, "retryAt": retry_at, "startedAt": status.get("startedAt") or iso(now)}), requeue=delay + 0.5)


def running(goal: Goal, raw: Raw, pod: Raw, attempt: int, agent_name: str | None, cluster: Cluster,
            now: datetime, settings: Settings, next_look: float | None) -> Decision:
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
    timeout = settings.heartbeat_timeout_seconds
    beat = status.get("heartbeat") or agent_started(raw, pod)
    if timeout and not pending and beat and (now - parse_time(beat)).total_seconds() > timeout:
        return Decision(events=(Event("Warning", HEARTBEAT_LOST,
                                      f"no heartbeat from pod {pod_name} since {beat}; replacing it"),),
                        delete=(pod_name,), requeue=1.0)
    conditions: list[Condition] = [("Dispatched", True, "PodCreated", pod_name)]
    fields: dict[str, Any] = {"agent": agent_name, "pod": pod_name, "attempt": attempt,
                              "startedAt": status.get("startedAt") or iso(now)}
    agent_raw = cluster.agent(agent_name) if agent_name else None
    if agent_raw is not None:
        ws = workspace(goal, Agent.model_validate(agent_raw), cluster)
        conditions += [ws.condition] if ws.condition else []
        fields.update(workspace_fields(raw, ws))
    if timeout and not pending:
        next_look = min(next_look, timeout) if next_look else timeout
    return Decision(status=Transition(phase, reason, message, tuple(conditions), fields=fields), approvals=True,
                    requeue=next_look)


def agent_started(raw: Raw, pod: Raw) -> str | None:
    """When the pod's agent could first have beaten: its container's start, or when the goal took
    the pod if that came later (a warm pod's agent idles before its claim). None while the container
    has not started: a pod waiting for the scheduler or its image has no agent to be hung."""
    started = next(((cs.get("state") or {}).get("running", {}).get("startedAt")
                    for cs in (pod.get("status") or {}).get("containerStatuses") or []
                    if cs.get("name") == AGENT_CONTAINER), None)
    if not started:
        return None
    taken = next((c.get("lastTransitionTime") for c in (raw.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Dispatched" and c.get("status") == "True"), None)
    return str(max(started, taken, key=parse_time) if taken else started)


def resolve_agent(goal: Goal, raw: Raw, cluster: Cluster) -> tuple[Raw | None, str]:
    """The goal's Agent, or None and a message naming the field to fix. Of the Agents a selector
    matches: the one already assigned, else a Ready one with the fewest live pods."""
    ns = goal.namespace
    if goal.spec.agent_ref is not None:
        name = goal.spec.agent_ref.name
        agent = cluster.agent(name)
        if agent is None:
            return None, (f"Goal {ns}/{goal.name}: spec.agentRef.name {name!r} does not exist in "
                          f"namespace {ns}; create the Agent or fix the name")
        return agent, ""
    selector = goal.spec.agent_selector.to_api() if goal.spec.agent_selector else {}
    assigned = (raw.get("status") or {}).get("agent")
    matching = [a for a in cluster.agents() if dispatch.selector_matches(selector, a["metadata"].get("labels") or {})]
    if not matching:
        return None, (f"Goal {ns}/{goal.name}: spec.agentSelector matches no Agent in namespace {ns}; "
                      f"label an Agent or change the selector")
    for a in matching:
        if a["metadata"]["name"] == assigned:
            return a, ""
    ready = [a for a in matching if is_true((a.get("status") or {}).get("conditions") or [], "Ready")] or matching
    best = min(ready, key=lambda a: (cluster.live_pods(a["metadata"]["name"]), a["metadata"]["name"]))
    return best, ""


def subgoal_refusal(raw: Raw, parent: Raw | None, cluster: Cluster) -> subgoals.Refusal | None:
    """Why a sub-goal may not run (subgoals.py), or None."""
    parent_name = (raw.get("spec") or {}).get("parent") or ""
    siblings = [g for g in cluster.subgoals(parent_name) if g["metadata"]["name"] != raw["metadata"]["name"]]
    return subgoals.refusal(raw, parent, cluster.agent, siblings, trust.trusted_phase,
                            subgoals.depth(raw, cluster.goal))


def workspace(goal: Goal, agent: Agent, cluster: Cluster) -> WorkspaceState:
    """The goal's workspace as the claim caches show it."""
    source = goal.spec.workspace_from
    return workspace_state(goal, agent, cluster.claim(claim_name(goal.name)),
                           cluster.claim(claim_name(source.goal)) if source else None)


def workspace_fields(raw: Raw, ws: WorkspaceState) -> dict[str, Any]:
    """{"workspace": ...} when status.workspace should change."""
    return {"workspace": ws.status} if ws.status != (raw.get("status") or {}).get("workspace") else {}


def dispatch_step(goal: Goal, raw: Raw, attempt: int, cluster: Cluster, now: datetime,
                  next_look: float | None) -> Decision:
    """A goal with no live pod and attempts left: Pending without a Ready Agent, Blocked by its
    dependencies (Failed by a failed one or a cycle), waiting out a retry's backoff, or ready for
    its next attempt (a Dispatch)."""
    status = raw.get("status") or {}
    agent_raw, problem = resolve_agent(goal, raw, cluster)
    if agent_raw is None:
        return Decision(status=Transition(Phase.PENDING, "AgentNotFound", problem,
                                          (("Dispatched", False, "AgentNotFound", problem),), warning=True))
    agent_name = agent_raw["metadata"]["name"]
    agent_conditions = (agent_raw.get("status") or {}).get("conditions") or []
    if not is_true(agent_conditions, "Ready"):
        why = next((c.get("message") for c in agent_conditions if c.get("type") == "Ready"), "") or "not reconciled yet"
        msg = f"Agent {agent_name} is not Ready: {why}"
        return Decision(status=Transition(Phase.PENDING, "AgentNotReady", msg,
                                          (("Dispatched", False, "AgentNotReady", msg),), fields={"agent": agent_name}))

    def phase_of(name: str) -> str | None:
        dep = cluster.goal(name)
        # A dependency counts as it stands in the operator's own record, never as another wrote it.
        return None if dep is None else trust.trusted_phase(dep) or Phase.PENDING.value

    deps = dispatch.check_dependencies(
        goal.name, goal.spec.depends_on, phase_of=phase_of,
        depends_on_of=lambda n: list(((cluster.goal(n) or {}).get("spec") or {}).get("dependsOn") or []))
    if deps.cycle or deps.failed:
        reason, msg = (("DependencyCycle", "spec.dependsOn forms a cycle: " + dispatch.describe_cycle(deps.cycle))
                       if deps.cycle else ("DependencyFailed", f"dependencies failed: {', '.join(deps.failed)}"))
        return Decision(status=_ended(Phase.FAILED, reason, msg, now, ("DependenciesMet", False, reason, msg),
                                      agent=agent_name))
    if deps.waiting:
        msg = f"waiting for {', '.join(deps.waiting)}"
        return Decision(status=Transition(
            Phase.BLOCKED, "Blocked", msg,
            (("DependenciesMet", False, "Waiting", msg), ("Dispatched", False, "DependenciesPending", msg)),
            fields={"agent": agent_name, "waitingFor": deps.waiting}))
    met: tuple[Condition, ...] = (
        (("DependenciesMet", True, "Succeeded", "all dependencies succeeded"),) if goal.spec.depends_on else ())
    agent = Agent.model_validate(agent_raw)
    ws = workspace(goal, agent, cluster)
    if ws.blocked:
        return Decision(status=_ended(Phase.FAILED, "SourceClaimMissing", ws.blocked, now,
                                      *met, *([ws.condition] if ws.condition else []), agent=agent_name))
    if status.get("retryAt") and parse_time(status["retryAt"]) > now:
        wait = (parse_time(status["retryAt"]) - now).total_seconds() + 0.5
        return Decision(requeue=min(wait, next_look) if next_look else wait)
    return Decision(dispatch=Dispatch(
        goal, agent, int((agent_raw.get("spec") or {}).get("maxConcurrentGoals", 1)), attempt + 1, ws, met,
        status.get("startedAt") or iso(now), next_look))


def free_slots(raw: Raw, plan: Dispatch, cluster: Cluster, now: datetime) -> int:
    """The agent's free slots when the goal's turn has come (no queued goal ahead of it, by
    priority then age, would take them all), else 0. Goals waiting out a backoff are not ahead.
    A sub-goal may also run in its parent's slot (parents_slot)."""
    free = plan.limit - cluster.live_pods(plan.agent.name)
    me, ahead = queue_key(raw), 0
    if free > 0:
        for other in cluster.queued(plan.agent.name):
            if other["metadata"]["name"] != plan.goal.name and _waits(other, now) and queue_key(other) < me:
                ahead += 1
                if ahead >= free:
                    break
        else:
            return free
    return 1 if parents_slot(raw, plan, cluster, now) else 0


def _waits(goal: Raw, now: datetime) -> bool:
    """Queued and not waiting out a retry backoff."""
    st = goal.get("status") or {}
    return st.get("phase") == Phase.QUEUED.value and not (st.get("retryAt") and parse_time(st["retryAt"]) > now)


def parents_slot(raw: Raw, plan: Dispatch, cluster: Cluster, now: datetime) -> bool:
    """Whether the sub-goal may run in the slot of its parent, which runs on the same agent: a
    parent that waits for its sub-goal would otherwise hold the slot the sub-goal waits for, and with
    every slot held so (maxConcurrentGoals 1 is enough) neither would ever go on. One sub-goal of a
    parent at a time, first in the queue's order, so the agent's pods exceed maxConcurrentGoals by at
    most one per running parent."""
    parent_name = plan.goal.spec.parent
    parent = cluster.goal(parent_name) if parent_name else None
    pst = (parent or {}).get("status") or {}
    if not parent_name or pst.get("phase") not in LIVE or pst.get("agent") != plan.agent.name:
        return False
    me = queue_key(raw)
    for sibling in cluster.subgoals(parent_name):
        sst = sibling.get("status") or {}
        if sibling["metadata"]["name"] == plan.goal.name or sst.get("agent") != plan.agent.name:
            continue
        if sst.get("phase") in LIVE or (_waits(sibling, now) and queue_key(sibling) < me):
            return False
    return True


def waiting_for_slot(plan: Dispatch) -> Decision:
    """Queued until a freed slot wakes the agent's queue (or spec.timeout comes)."""
    msg = f"waiting for a free slot of agent {plan.agent.name} (maxConcurrentGoals {plan.limit})"
    return Decision(status=Transition(Phase.QUEUED, "Queued", msg,
                                      (*plan.conditions, ("Dispatched", False, "WaitingForSlot", msg)),
                                      fields={"agent": plan.agent.name, "waitingFor": []}),
                    requeue=plan.next_look)


def quota_exceeded(plan: Dispatch, pod: str, error: str, settings: Settings) -> Decision:
    """The namespace's ResourceQuota refused the pod: wait like any other queued goal."""
    msg = f"pod {pod} would exceed a ResourceQuota: {error}"
    return Decision(status=Transition(Phase.QUEUED, "QuotaExceeded", msg,
                                      (*plan.conditions, ("Dispatched", False, "QuotaExceeded", msg)), warning=True,
                                      fields={"agent": plan.agent.name, "waitingFor": []}),
                    requeue=settings.retry_backoff_seconds)


def dispatched(raw: Raw, plan: Dispatch, pod: str, now: datetime, settings: Settings) -> Decision:
    """The attempt's pod was created: Running. The pod's own ADDED event brings no reconcile
    (GoalReconciler.pod_recorded), so the next look is the heartbeat check, or the timeout if that
    comes first."""
    ws = plan.workspace
    looks = [settings.heartbeat_timeout_seconds] if settings.heartbeat_timeout_seconds else []
    if plan.goal.spec.timeout:
        looks.append((parse_time(plan.started_at) + parse_duration(plan.goal.spec.timeout) - now).total_seconds() + 0.5)
    return Decision(status=Transition(
        Phase.RUNNING, "Dispatched", running_message(plan.attempt, pod, plan.agent.name),
        (*plan.conditions, *([ws.condition] if ws.condition else []), ("Dispatched", True, "PodCreated", pod)),
        fields={"agent": plan.agent.name, "pod": pod, "attempt": plan.attempt, "startedAt": plan.started_at,
                "waitingFor": [], "retryAt": None, **workspace_fields(raw, ws)}),
        requeue=min(looks) if looks else None)
