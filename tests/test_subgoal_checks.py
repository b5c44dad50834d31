"""What the operator refuses of a sub-goal before its first attempt: what admission cannot see
because it lies outside the request (the parent, the siblings, the Agents)."""

from __future__ import annotations

from typing import Any

from overseer.operator.subgoals import creator_agent, refusal
from overseer.operator.trust import trusted_phase

NS = "team"
BY_CODER = f"system:serviceaccount:{NS}:overseer-agent-coder"


def agent(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": name}, "spec": spec}


AGENTS = {"coder": agent("coder", delegates=["reviewer"], maxSubgoalsPerGoal=2, budget={"maxTokensPerGoal": 50_000}),
          "reviewer": agent("reviewer"), "admin": agent("admin")}


def goal(name: str, created: str = "2026-12-01T10:00:05Z", creator: str | None = BY_CODER, phase: str | None = None,
         **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": NS, "name": name, "creationTimestamp": created}
    if creator:
        meta["annotations"] = {"overseer.dev/created-by": creator}
    body = {"metadata": meta, "spec": {"description": "d", "agentRef": {"name": "coder"}, "parent": "top",
                                       "budget": {"maxTokensPerGoal": 10_000}, **spec}}
    if phase:
        body["status"] = {"phase": phase}
    return body


PARENT = {"metadata": {"namespace": NS, "name": "top", "creationTimestamp": "2026-12-01T10:00:00Z"},
          "spec": {"description": "d", "agentRef": {"name": "coder"}, "priority": 5,
                   "approvalPolicy": {"minRisk": "medium"}},
          "status": {"phase": "Running", "agent": "coder"}}


def check(child: dict[str, Any], parent: dict[str, Any] | None = PARENT, siblings: list[dict[str, Any]] = ()) -> str | None:
    found = refusal(child, parent, AGENTS.get, list(siblings), trusted_phase)
    return None if found is None else f"{found.reason}: {found.message}"


def test_a_sub_goal_as_spawn_subgoal_writes_it_passes() -> None:
    assert check(goal("top-1", approvalPolicy={"minRisk": "medium"}, priority=5)) is None
    assert check(goal("top-1", agentRef={"name": "reviewer"}, approvalPolicy={"minRisk": "low"})) is None


def test_the_creator_comes_only_from_the_api_servers_stamp_of_an_agent_of_the_namespace() -> None:
    assert creator_agent(goal("x")) == "coder"
    assert creator_agent(goal("x", creator=None)) is None
    assert creator_agent(goal("x", creator="system:serviceaccount:other:overseer-agent-coder")) is None
    assert creator_agent(goal("x", creator="alice@example.com")) is None


def test_an_agent_may_not_hang_a_goal_under_another_agents_goal() -> None:
    theirs = {**PARENT, "status": {"phase": "Running", "agent": "admin"}}
    assert check(goal("top-1"), theirs).startswith("NotOwnGoal: Goal team/top-1 was created by agent coder, but its "
                                                   "spec.parent top is worked on by admin")


def test_an_agent_may_target_only_itself_or_its_delegates() -> None:
    assert check(goal("top-1", agentRef={"name": "admin"})).startswith(
        "NotADelegate: Goal team/top-1 was created by agent coder for agent admin")


def test_the_parent_must_exist_and_have_been_running() -> None:
    assert check(goal("top-1"), None).startswith("ParentNotFound: Goal team/top-1: spec.parent 'top' does not exist")
    ended = {**PARENT, "status": {"phase": "Succeeded", "agent": "coder", "completedAt": "2026-12-01T10:00:02Z"}}
    assert check(goal("top-1"), ended).startswith("ParentNotRunning")
    # Created just before its parent ended: fine.
    assert check(goal("top-1", created="2026-12-01T10:00:01Z", approvalPolicy={"minRisk": "medium"}), ended) is None


def test_a_weaker_approval_policy_is_refused_with_the_fix() -> None:
    assert check(goal("top-1")) == (  # default minRisk high: fewer calls wait than under the parent's medium
        "WeakerApprovalPolicy: Goal team/top-1: spec.approvalPolicy.minRisk high lets more calls run unapproved "
        "than its parent top's (medium); set minRisk medium or lower")


def test_priority_and_budget_stay_within_the_parents() -> None:
    assert check(goal("top-1", approvalPolicy={"minRisk": "low"}, priority=9)).startswith("PriorityAboveParent")
    # The parent has no budget of its own: its Agent's 50,000 is the ceiling.
    assert check(goal("top-1", approvalPolicy={"minRisk": "low"}, budget={"maxTokensPerGoal": 60_000})).startswith(
        "BudgetAboveParent: Goal team/top-1: spec.budget.maxTokensPerGoal 60000 is not carved from its parent top's "
        "budget of 50000 tokens")
    assert check(goal("top-1", approvalPolicy={"minRisk": "low"}, budget={})).startswith(
        "BudgetAboveParent: Goal team/top-1: spec.budget.maxTokensPerGoal unset (unlimited)")


def test_no_more_unfinished_sub_goals_at_once_than_the_agent_allows() -> None:
    strict = {"approvalPolicy": {"minRisk": "low"}}
    earlier = [goal(f"top-{i}", created=f"2026-12-01T10:00:0{i}Z", phase="Running", **strict) for i in (1, 2)]
    third = goal("top-3", created="2026-12-01T10:00:03Z", **strict)
    assert check(third, siblings=earlier) == (
        "TooManySubgoals: Goal team/top-3: its parent top already has 2 unfinished sub-goals, the most its Agent coder "
        "allows (spec.maxSubgoalsPerGoal 2)")
    earlier[0]["status"]["phase"] = "Succeeded"
    assert check(third, siblings=earlier) is None
    # Later siblings never count against an earlier one.
    assert check(earlier[1], siblings=[earlier[0], third]) is None
