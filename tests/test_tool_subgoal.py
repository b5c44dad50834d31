"""spawn_subgoal: deterministic names, the depth limit, budget carving, and idempotent creation
and waiting against an in-memory stand-in for the API server."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from overseer.agent.loop import Budget
from overseer.agent.tools import ToolContext, ToolRegistry
from overseer.agent.tools.subgoal import (
    LABEL_PARENT,
    MIN_SUBGOAL_TOKENS,
    PARENT_RESERVE_TOKENS,
    BudgetRefused,
    ParentGoal,
    SpawnSubgoal,
    TokenLedger,
    ancestors,
    UNLIMITED_PARENT_TOKENS,
    carve_tokens,
    charge_of,
    child_name,
    depth_refusal,
    render_subgoal,
    report,
)


DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a Goal name, usable as a label value
NS = "team-a"

# ---- names ------------------------------------------------------------------------------------


def test_the_same_call_always_gives_the_same_name() -> None:
    first = child_name("fix-ci", "Write the changelog entry", "coder")
    assert first == child_name("fix-ci", "  Write the changelog entry\n", "coder")
    assert first.startswith("fix-ci-") and len(first) == len("fix-ci-") + 8


def test_names_differ_by_description_agent_and_parent() -> None:
    names = {child_name("fix-ci", "Write the changelog", "coder"), child_name("fix-ci", "Bump the version", "coder"),
             child_name("fix-ci", "Write the changelog", "writer"), child_name("fix-docs", "Write the changelog", "coder")}
    assert len(names) == 4


@pytest.mark.parametrize("parent", ["a" * 253, "x" * 54 + "-tail", "release-2026.01.15-" + "b" * 60])
def test_names_fit_in_63_characters_and_stay_valid(parent: str) -> None:
    name = child_name(parent, "Run the migration", "coder")
    assert len(name) <= 63 and DNS_NAME.match(name), name


# ---- depth ------------------------------------------------------------------------------------


def test_goals_may_nest_up_to_the_limit() -> None:
    assert depth_refusal([], 3, "top") is None
    assert depth_refusal(["top"], 3, "child") is None
    assert depth_refusal(["child", "top"], 3, "grandchild") is None
    refusal = depth_refusal(["grandchild", "child", "top"], 3, "great")
    assert refusal and "depth 4" in refusal and "limit of 3" in refusal and "great <- grandchild" in refusal


def test_depth_one_lets_only_top_level_goals_spawn() -> None:
    assert depth_refusal([], 1, "top") is None
    assert depth_refusal(["top"], 1, "child") is not None


def test_depth_zero_turns_sub_goals_off() -> None:
    assert "turned off" in (depth_refusal([], 0, "top") or "")


async def test_ancestors_follow_spec_parent_nearest_first() -> None:
    goals = {"child": {"spec": {"parent": "top"}}, "top": {"spec": {}}}
    fetched: list[str] = []

    async def fetch(name: str) -> dict[str, Any] | None:
        fetched.append(name)
        return goals.get(name)

    assert await ancestors(fetch, "grandchild", "child", limit=3) == ["child", "top"]
    assert await ancestors(fetch, "top", None, limit=3) == []
    assert await ancestors(fetch, "orphan", "deleted-parent", limit=3) == ["deleted-parent"]


async def test_ancestors_stop_past_the_limit_and_treat_a_cycle_as_too_deep() -> None:
    chain = {f"g{i}": {"spec": {"parent": f"g{i + 1}"}} for i in range(100)}
    fetched: list[str] = []

    async def fetch(name: str) -> dict[str, Any] | None:
        fetched.append(name)
        return chain.get(name) or {"spec": {"parent": "a"} if name == "b" else {"parent": "b"}}

    assert await ancestors(fetch, "g0", "g1", limit=3) == ["g1", "g2", "g3", "g4"]
    assert len(fetched) <= 4
    cyclic = await ancestors(fetch, "a", "b", limit=3)
    assert len(cyclic) == 4 and depth_refusal(cyclic, 3, "a") is not None


# ---- budget -----------------------------------------------------------------------------------


def test_a_request_is_capped_at_what_the_parent_has_left_less_its_reserve() -> None:
    assert carve_tokens(10_000, 50_000) == 10_000
    assert carve_tokens(80_000, 50_000) == 50_000 - PARENT_RESERVE_TOKENS
    assert carve_tokens(500, 50_000) == 500


def test_without_a_request_the_child_gets_half_of_what_is_left() -> None:
    assert carve_tokens(None, 50_000) == 25_000
    tight = MIN_SUBGOAL_TOKENS + PARENT_RESERVE_TOKENS
    assert carve_tokens(None, tight) == MIN_SUBGOAL_TOKENS


def test_a_parent_with_too_little_left_refuses_to_spawn() -> None:
    with pytest.raises(BudgetRefused, match="3000 tokens of its budget left"):
        carve_tokens(1_000, 3_000)
    with pytest.raises(BudgetRefused, match="0 tokens"):
        carve_tokens(None, -50)


def test_a_parent_without_a_token_limit_passes_the_request_on_and_never_spawns_an_unlimited_child() -> None:
    assert carve_tokens(7_000, None) == 7_000
    assert carve_tokens(None, None) == UNLIMITED_PARENT_TOKENS


def test_a_child_costs_its_carve_while_it_runs_and_its_use_once_it_ended() -> None:
    running = {"spec": {"budget": {"maxTokensPerGoal": 20_000}}, "status": {"phase": "Running", "tokens": {"total": 300}}}
    assert charge_of(running) == 20_000
    done = copy.deepcopy(running)
    done["status"].update(phase="Succeeded", tokens={"total": 4_200})
    assert charge_of(done) == 4_200
    assert charge_of({"spec": {}, "status": {"phase": "Queued"}}) == 0


def test_the_ledger_lowers_the_parents_own_budget_by_what_its_children_hold() -> None:
    budget, used = Budget(max_tokens=100_000), [10_000]
    ledger = TokenLedger(budget, used=lambda: used[0])
    assert ledger.remaining() == 90_000
    ledger.charge("top-aaaa", 30_000)
    assert (budget.max_tokens, ledger.remaining()) == (70_000, 60_000)
    ledger.charge("top-aaaa", 5_000)  # the child ended having used less: the rest comes back
    ledger.charge("top-bbbb", 20_000)
    assert (budget.max_tokens, ledger.remaining()) == (75_000, 65_000)


def test_a_ledger_without_a_limit_never_limits() -> None:
    budget = Budget(max_tokens=None)
    ledger = TokenLedger(budget, used=lambda: 10**9)
    ledger.charge("top-aaaa", 5_000)
    assert ledger.remaining() is None and budget.max_tokens is None


# ---- the Goal object and the result -----------------------------------------------------------

PARENT = ParentGoal(NS, "fix-ci", "uid-1", parent=None, priority=5, approval_policy={"minRisk": "medium"})


def test_a_sub_goal_names_its_parent_and_inherits_its_policy() -> None:
    body = render_subgoal(PARENT, "fix-ci-12345678", "Write the changelog", "coder", 20_000)
    assert body["metadata"]["labels"] == {LABEL_PARENT: "fix-ci"}
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
                                                    "name": "fix-ci", "uid": "uid-1"}]
    assert body["spec"] == {"description": "Write the changelog", "agentRef": {"name": "coder"}, "parent": "fix-ci",
                            "priority": 5, "budget": {"maxTokensPerGoal": 20_000},
                            "approvalPolicy": {"minRisk": "medium"}}
    assert "dependsOn" not in body["spec"]


def test_a_failed_sub_goal_is_an_error_result_with_its_reason() -> None:
    ok = report({"metadata": {"name": "c"}, "spec": {"budget": {"maxTokensPerGoal": 9_000}},
                 "status": {"phase": "Succeeded", "result": "Changelog written.", "tokens": {"total": 1_234}}})
    assert not ok.is_error and "Changelog written." in ok.content and "1234 of 9000" in ok.content
    failed = report({"metadata": {"name": "c"}, "spec": {},
                     "status": {"phase": "Failed", "failureReason": "BudgetExhausted", "result": "ran out"}})
    assert failed.is_error and "Failed" in failed.content and "BudgetExhausted" in failed.content


# ---- the tool against a stand-in API server ---------------------------------------------------


class FakeKube:
    """Goals in memory; create answers None when the name exists, as Kube.create does."""

    def __init__(self, goals: dict[str, dict[str, Any]]) -> None:
        self.goals = goals
        self.creates = 0
        self.changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.rv = 1

    def _name(self, url: str) -> str:
        return url.rsplit("/", 1)[1]

    async def get(self, url: str, params: Any = None) -> dict[str, Any] | None:
        obj = self.goals.get(self._name(url))
        return copy.deepcopy(obj) if obj else None

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.creates += 1
        name = body["metadata"]["name"]
        if name in self.goals:
            return None
        self.rv += 1
        body = {**copy.deepcopy(body), "status": {"phase": "Pending"}}
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.goals[name] = body
        return copy.deepcopy(body)

    async def request(self, method: str, url: str, params: Any = None, **_: Any) -> dict[str, Any]:
        return {"items": [copy.deepcopy(g) for g in self.goals.values()]}

    async def watch(self, url: str, params: Any = None) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.changes.get()

    def finish(self, name: str, phase: str, result: str, tokens: int) -> None:
        self.goals[name]["status"] = {"phase": phase, "result": result, "tokens": {"total": tokens}}
        self.changes.put_nowait({"type": "MODIFIED", "object": copy.deepcopy(self.goals[name])})


def goal(name: str, parent: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"description": "x", "agentRef": {"name": "coder"}, **({"parent": parent} if parent else {})}}


def tool_for(kube: FakeKube, name: str, parent: str | None = None, limit: int | None = 100_000,
             max_depth: int = 3) -> tuple[ToolRegistry, TokenLedger, Budget]:
    budget = Budget(max_tokens=limit)
    ledger = TokenLedger(budget, used=lambda: 10_000)
    tool = SpawnSubgoal(kube, ParentGoal(NS, name, f"uid-{name}", parent), "coder", ledger,  # type: ignore[arg-type]
                        max_depth=max_depth)
    return ToolRegistry([tool]), ledger, budget


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


async def test_calling_again_finds_the_sub_goal_instead_of_creating_another(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top")})
    registry, ledger, budget = tool_for(kube, "top")
    call = {"description": "Write the changelog", "max_tokens": 30_000, "wait": False}
    first = await registry.run("spawn_subgoal", call, ctx)
    name = child_name("top", "Write the changelog", "coder")
    assert not first.is_error and name in first.content
    assert kube.goals[name]["spec"]["parent"] == "top"
    assert kube.goals[name]["spec"]["budget"] == {"maxTokensPerGoal": 30_000}
    assert budget.max_tokens == 70_000

    # A resumed parent (a new process, a new ledger) runs the same call again.
    registry, ledger, budget = tool_for(kube, "top")
    await registry.get("spawn_subgoal").restore()  # type: ignore[union-attr]
    assert budget.max_tokens == 70_000
    again = await registry.run("spawn_subgoal", call, ctx)
    assert not again.is_error and kube.creates == 1 and len(kube.goals) == 2
    assert budget.max_tokens == 70_000


async def test_waiting_returns_the_sub_goals_result_and_refunds_what_it_did_not_use(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top")})
    registry, ledger, budget = tool_for(kube, "top")
    call = registry.run("spawn_subgoal", {"description": "Write the changelog", "max_tokens": 30_000}, ctx)
    task = asyncio.create_task(call)
    name = child_name("top", "Write the changelog", "coder")
    while name not in kube.goals:
        await asyncio.sleep(0.01)
    kube.finish(name, "Succeeded", "Changelog written.", 4_000)
    result = await asyncio.wait_for(task, 5)
    assert not result.is_error and "Changelog written." in result.content and "Succeeded" in result.content
    assert budget.max_tokens == 96_000


async def test_a_sub_goal_that_fails_is_an_error_for_the_parent(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top")})
    registry, _, _ = tool_for(kube, "top")
    task = asyncio.create_task(registry.run("spawn_subgoal", {"description": "Deploy"}, ctx))
    name = child_name("top", "Deploy", "coder")
    while name not in kube.goals:
        await asyncio.sleep(0.01)
    kube.finish(name, "Failed", "could not reach the registry", 100)
    result = await asyncio.wait_for(task, 5)
    assert result.is_error and "could not reach the registry" in result.content


async def test_waiting_too_long_leaves_the_sub_goal_running(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top")})
    registry, _, _ = tool_for(kube, "top")
    result = await registry.run("spawn_subgoal", {"description": "Slow work", "timeout_seconds": 1}, ctx)
    assert result.is_error and "keeps running" in result.content


async def test_a_goal_at_the_depth_limit_gets_an_error_and_creates_nothing(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top"), "mid": goal("mid", "top"), "low": goal("low", "mid")})
    registry, _, _ = tool_for(kube, "low", parent="mid", max_depth=2)
    result = await registry.run("spawn_subgoal", {"description": "Go deeper"}, ctx)
    assert result.is_error and "limit of 2" in result.content and "low <- mid <- top" in result.content
    assert kube.creates == 0


async def test_a_parent_short_of_tokens_gets_an_error_and_creates_nothing(ctx: ToolContext) -> None:
    kube = FakeKube({"top": goal("top")})
    registry, _, _ = tool_for(kube, "top", limit=12_000)  # 10 000 used already
    result = await registry.run("spawn_subgoal", {"description": "More work"}, ctx)
    assert result.is_error and "2000 tokens of its budget left" in result.content and kube.creates == 0


async def test_a_goal_of_the_same_name_that_is_not_a_sub_goal_is_left_alone(ctx: ToolContext) -> None:
    name = child_name("top", "Write the changelog", "coder")
    kube = FakeKube({"top": goal("top"), name: goal(name)})
    registry, _, _ = tool_for(kube, "top")
    result = await registry.run("spawn_subgoal", {"description": "Write the changelog"}, ctx)
    assert result.is_error and "not a sub-goal" in result.content
