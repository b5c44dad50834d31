"""Sub-goals: the checks the operator makes of a goal with spec.parent before its first attempt.

Admission (charts/overseer/files/admission/agent-subgoals.yaml) sees only the request and the
creating agent's own Agent: that a goal an agent creates names a parent, owns up to it, targets
the agent itself or one of its spec.delegates, carries no overseer.dev/ annotation and has a token
budget. What needs other objects is checked here, from the caches: the parent
is one of the creating agent's goals and ran when the sub-goal was created, the sub-goal's
approval policy is no weaker, its priority and budget no larger than the parent's, and the parent
has no more unfinished sub-goals than its Agent's spec.maxSubgoalsPerGoal. A goal that fails a
check fails for good, with the reason in its status; one whose parent's pod already runs as its
creator before the parent's status says so waits (parent_pod_unrecorded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overseer.api import Phase
from overseer.api.meta import LABEL_AGENT, MAX_SUBGOAL_DEPTH as MAX_DEPTH, RISK_ORDER
from overseer.approvals import CREATED_BY

from .dispatch import TERMINAL, pod_outcome

Raw = dict[str, Any]
LIVE = {Phase.RUNNING.value, Phase.AWAITING_APPROVAL.value}
AGENT_PREFIX = "overseer-agent-"


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def creator_agent(goal: Raw) -> str | None:
    """The Agent whose pod created goal, from the API server's stamp; None for anyone else."""
    meta = goal["metadata"]
    parts = ((meta.get("annotations") or {}).get(CREATED_BY) or "").split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and parts[2] == meta.get("namespace") \
            and parts[3].startswith(AGENT_PREFIX):
        return parts[3][len(AGENT_PREFIX):]
    return None


def _tokens(spec: dict[str, Any]) -> int | None:
    return ((spec.get("budget") or {}).get("maxTokensPerGoal")) or None


def _risk(spec: dict[str, Any]) -> str:
    risk: str = (spec.get("approvalPolicy") or {}).get("minRisk", "high")
    return risk


def _created(g: Raw) -> tuple[str, str]:
    return g["metadata"].get("creationTimestamp", ""), g["metadata"]["name"]


def depth(goal: Raw, goal_of: Callable[[str], Raw | None]) -> int:
    """How many parents stand above goal (1 for a sub-goal of a top-level goal); counting stops past
    MAX_DEPTH, and at a parent named twice (a loop of spec.parent)."""
    seen, level, current = {goal["metadata"]["name"]}, 0, goal
    while level <= MAX_DEPTH and (parent_name := (current.get("spec") or {}).get("parent")):
        level += 1
        parent = goal_of(parent_name)
        if parent is None or parent_name in seen:
            break
        seen.add(parent_name)
        current = parent
    return level


def parent_pod_unrecorded(goal: Raw, parent: Raw, parent_pods: list[Raw],
                          phase_of: Callable[[Raw], str | None]) -> str | None:
    """The name of the parent's live pod that works as the agent who created goal while the
    parent's status does not say so yet, else None. The operator writes a goal Running right after
    creating its pod: killed in between (or with its cache of the parent behind), it finds the
    parent still Pending or Queued while the parent's agent already creates sub-goals. Those wait
    for the parent's next reconcile, which adopts the pod, rather than fail for good. Only the
    operator creates pods (agents may not), and the pod must be owned by this very parent, so an
    agent still gets no sub-goal of a goal it does not work on."""
    creator = creator_agent(goal)
    phase, pstatus = phase_of(parent), parent.get("status") or {}
    if creator is None or phase in TERMINAL or (phase in LIVE and pstatus.get("agent") == creator):
        return None
    uid = parent["metadata"].get("uid")
    for pod in parent_pods:
        meta = pod["metadata"]
        if ((meta.get("labels") or {}).get(LABEL_AGENT) == creator and uid
                and any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
                and pod_outcome(pod).state == "live"):
            return str(meta["name"])
    return None


def refusal(goal: Raw, parent: Raw | None, agent_of: Callable[[str], Raw | None], siblings: list[Raw],
            phase_of: Callable[[Raw], str | None], level: int = 1) -> Refusal | None:
    """Why the sub-goal `goal` may not run, or None. agent_of looks up an Agent of the namespace,
    siblings are the other goals naming the same parent, phase_of gives a goal's phase as the
    operator trusts it, level is the goal's depth()."""
    ns, name = goal["metadata"]["namespace"], goal["metadata"]["name"]
    spec = goal.get("spec") or {}
    ref = f"Goal {ns}/{name}"
    parent_name = spec["parent"]
    if parent is None:
        return Refusal("ParentNotFound", f"{ref}: spec.parent {parent_name!r} does not exist in namespace {ns}")
    if level > MAX_DEPTH:
        return Refusal("TooDeep", f"{ref} lies more than {MAX_DEPTH} sub-goals below its top-level goal, the "
                                  f"deepest the operator runs: do this work in a goal higher up")
    pspec, pstatus = parent.get("spec") or {}, parent.get("status") or {}
    parent_agent = agent_of(pstatus["agent"]) if pstatus.get("agent") else None
    creator = creator_agent(goal)
    if creator is not None:
        target = (spec.get("agentRef") or {}).get("name")
        delegates = ((agent_of(creator) or {}).get("spec") or {}).get("delegates") or []
        if target != creator and target not in delegates:
            return Refusal("NotADelegate", f"{ref} was created by agent {creator} for agent {target or '(a selector)'}, "
                                           f"which its Agent's spec.delegates does not list")
        if pstatus.get("agent") != creator:
            return Refusal("NotOwnGoal", f"{ref} was created by agent {creator}, but its spec.parent {parent_name} is "
                                         f"worked on by {pstatus.get('agent') or 'no agent'}: an agent may create "
                                         f"sub-goals of its own goals only")
        parent_phase = phase_of(parent)
        ended = pstatus.get("completedAt") or ""
        if parent_phase not in LIVE and not (parent_phase in TERMINAL and ended >= _created(goal)[0]):
            return Refusal("ParentNotRunning", f"{ref} was created by agent {creator} while its spec.parent "
                                               f"{parent_name} was not running ({parent_phase})")
    highest = RISK_ORDER["high"]
    if RISK_ORDER.get(_risk(spec), highest) > RISK_ORDER.get(_risk(pspec), highest):
        return Refusal("WeakerApprovalPolicy",
                       f"{ref}: spec.approvalPolicy.minRisk {_risk(spec)} lets more calls run unapproved than its "
                       f"parent {parent_name}'s ({_risk(pspec)}); set minRisk {_risk(pspec)} or lower")
    if int(spec.get("priority", 0)) > int(pspec.get("priority", 0)):
        return Refusal("PriorityAboveParent", f"{ref}: spec.priority {spec.get('priority')} is above its parent "
                                              f"{parent_name}'s ({pspec.get('priority', 0)})")
    limit = _tokens(pspec) or _tokens((parent_agent or {}).get("spec") or {})
    if limit is not None:
        mine = _tokens(spec)
        if mine is None or mine > limit:
            return Refusal("BudgetAboveParent",
                           f"{ref}: spec.budget.maxTokensPerGoal {mine or 'unset (unlimited)'} is not carved from its "
                           f"parent {parent_name}'s budget of {limit} tokens; set it to at most {limit}")
    most = int(((parent_agent or {}).get("spec") or {}).get("maxSubgoalsPerGoal", 5))
    earlier = [s for s in siblings if _created(s) < _created(goal) and phase_of(s) not in TERMINAL]
    if len(earlier) >= most:
        return Refusal("TooManySubgoals",
                       f"{ref}: its parent {parent_name} already has {len(earlier)} unfinished sub-goals, the most "
                       f"its Agent {pstatus.get('agent')} allows (spec.maxSubgoalsPerGoal {most})")
    return None
