"""Which budgets a call counts against, the platform's namespace budget file, and the Agent's
PriceKnown condition: pure functions, no servers."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from overseer.api import Agent
from overseer.gateway.identity import Ancestor, Caller, Identity
from overseer.gateway.scopes import BudgetFileError, Limits, NamespaceBudgets, scopes
from overseer.gateway.upstream import Target
from overseer.operator.pricing import price_condition
from overseer.prices import PriceTable

CALLER = Caller("team-a", "fix-ci-a1", "fix-ci", "uid-1", "coder", {"maxCostPerGoal": 0.5})


def budgets(tmp_path: Path, text: str) -> NamespaceBudgets:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return NamespaceBudgets(path)


def test_a_call_counts_against_its_goal_its_agents_day_and_its_namespaces_day(tmp_path: Path) -> None:
    target = Target("http://model", "k", "m", {"maxCostPerGoal": 2, "maxTokensPerGoal": 1000, "maxCostPerDay": 10})
    found = scopes(CALLER, target, budgets(tmp_path, "namespaces:\n  team-a: {maxTokensPerDay: 5000000}\n"),
                   "2026-12-02")

    assert [(s.key, s.owner, s.limits) for s in found] == [
        ("goal:uid-1", "Goal team-a/fix-ci", Limits(1000, Decimal("0.5"))),  # the Goal's own over its Agent's
        ("agent:coder:2026-12-02", "Agent team-a/coder for 2026-12-02 (UTC)", Limits(None, Decimal(10))),
        ("namespace:2026-12-02", "namespace team-a for 2026-12-02 (UTC; ConfigMap overseer-gateway-budgets)",
         Limits(5_000_000, None)),
    ]


def test_a_goal_cannot_raise_its_agents_daily_budget() -> None:
    caller = Caller("team-a", "p", "g", "uid", "coder", {"maxCostPerDay": 1000})
    [agent] = scopes(caller, Target("http://model", "k", "m", {"maxCostPerDay": 1}), NamespaceBudgets(), "d")

    assert agent.limits == Limits(None, Decimal(1))


def test_namespaces_without_a_row_get_the_default_and_budgets_without_limits_are_left_out(tmp_path: Path) -> None:
    table = budgets(tmp_path, "default: {maxCostPerDay: 50}\nnamespaces:\n  sandbox: {maxCostPerDay: 1}\n")
    caller = Caller("team-b", "p", "g", "uid", "coder")

    assert table.limits("team-b") == Limits(None, Decimal(50)) and table.limits("sandbox") == Limits(None, Decimal(1))
    assert [s.key for s in scopes(caller, Target("http://model", "k", "m"), table, "d")] == ["namespace:d"]


@pytest.mark.parametrize(("text", "error"), [
    ("namespaces:\n  team-a: {maxCostPerDay: -1}\n", "namespaces.team-a.maxCostPerDay: expected US dollars"),
    ("namespaces:\n  team-a: {maxTokensPerDay: 1.5}\n", "namespaces.team-a.maxTokensPerDay: expected a whole number"),
    ("default: {maxCost: 5}\n", "default: unknown fields ['maxCost']"),
    ("team-a: {maxCostPerDay: 5}\n", "expected a mapping with `default` and/or `namespaces`"),
    ("namespaces: [team-a]\n", "namespaces: expected a mapping of namespace to budget"),
])
def test_a_broken_budget_file_is_refused_naming_the_field(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(BudgetFileError, match=error.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        budgets(tmp_path, text)


def test_a_broken_budget_file_keeps_the_last_good_budgets(tmp_path: Path) -> None:
    table = budgets(tmp_path, "default: {maxCostPerDay: 5}\n")
    path = tmp_path / "budgets.yaml"
    path.write_text("default: {maxCostPerDay: lots}\n")
    os.utime(path, (1, 1))  # a new mtime, whatever the clock's resolution

    with pytest.raises(BudgetFileError):
        table.reload()
    assert table.limits("any") == Limits(None, Decimal(5))


def agent(model: str) -> Agent:
    raw: dict[str, Any] = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Agent",
                           "metadata": {"name": "coder", "namespace": "team-a"},
                           "spec": {"model": {"name": model, "apiKeySecretRef": {"name": "k", "key": "k"}}}}
    return Agent.model_validate(raw)


def test_an_agent_whose_model_has_no_price_is_told_which_configmap_key_to_add(tmp_path: Path) -> None:
    ok, reason, message = price_condition(agent("claude-unreleased-9"), PriceTable())

    assert (ok, reason) == (False, "NoPrice")
    assert "spec.model.name 'claude-unreleased-9' has no price" in message
    assert "add the key 'claude-unreleased-9' to ConfigMap overseer-gateway-prices" in message


def test_a_dated_model_name_or_one_the_configmap_adds_is_priced(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("my-proxy-model: {input: 1.5, output: 6}\n")

    assert price_condition(agent("claude-haiku-4-5-20251001"), PriceTable())[:2] == (True, "PriceListed")
    assert price_condition(agent("my-proxy-model"), PriceTable(path)) == (
        True, "PriceListed", "my-proxy-model costs $1.5 input and $6 output per million tokens")


def test_a_sub_goals_call_also_counts_against_each_ancestors_per_goal_budget(tmp_path: Path) -> None:
    sub = Caller("team-a", "lint-a1", "lint", "uid-lint", "coder", {"maxTokensPerGoal": 300}, (
        Ancestor("fix-ci", "uid-fix", {"maxTokensPerGoal": 1000, "maxCostPerGoal": 2}),
        Ancestor("release", "uid-rel", {}),  # no per-goal budget: nothing to count against
        Ancestor("quarter", "uid-q", {"maxCostPerGoal": 9})))
    found = scopes(sub, Target("http://model", "k", "m", {}), budgets(tmp_path, "{}\n"), "2026-12-02")

    assert [(s.key, s.kind + s.usd_budget, s.owner, s.limits) for s in found] == [
        ("goal:uid-lint", "maxCostPerGoal", "Goal team-a/lint", Limits(300, None)),
        ("goal:uid-fix", "Parent.maxCostPerGoal", "Goal team-a/fix-ci (with its sub-goals, among them lint)",
         Limits(1000, Decimal(2))),
        ("goal:uid-q", "Parent.maxCostPerGoal", "Goal team-a/quarter (with its sub-goals, among them lint)",
         Limits(None, Decimal(9))),
    ]


class ChainOfGoals:
    """The API a gateway sees for a pod of goal g12, whose spec.parent chain runs g11, g10 ... g0."""

    def __init__(self, goals: dict[str, dict[str, Any]], agents: dict[str, dict[str, Any]]) -> None:
        self.goals, self.agents, self.reads = goals, agents, 0

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        return {"status": {"authenticated": True, "audiences": ["overseer-gateway"], "user": {
            "username": "system:serviceaccount:team-a:overseer-agent-coder",
            "extra": {"authentication.kubernetes.io/pod-name": ["pod"], "authentication.kubernetes.io/pod-uid": ["p"]}}}}

    async def get(self, url: str) -> Any:
        self.reads += 1
        kind, name = url.rstrip("/").split("/")[-2:]
        if kind == "pods":
            return {"metadata": {"uid": "p", "labels": {"overseer.dev/goal": "g12", "overseer.dev/agent": "coder"},
                                 "ownerReferences": [{"controller": True, "kind": "Goal", "apiVersion": "overseer.dev/v1alpha1",
                                                      "name": "g12", "uid": "uid-g12"}]},
                    "spec": {"serviceAccountName": "overseer-agent-coder"}}
        return (self.goals if kind == "goals" else self.agents).get(name)


def goal(name: str, parent: str | None, budget: dict[str, Any] | None = None, agent: str = "coder") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {"parent": parent, "budget": budget},
            "status": {"agent": agent}}


async def test_the_gateway_reads_at_most_ten_ancestors_each_with_its_agents_per_goal_budget() -> None:
    goals = {f"g{n}": goal(f"g{n}", f"g{n - 1}" if n else None) for n in range(13)}
    goals["g11"] = goal("g11", "g10", {"maxCostPerGoal": 1})
    goals["g10"] = goal("g10", "g9", {"maxTokensPerGoal": None}, agent="reviewer")
    kube = ChainOfGoals(goals, {"coder": {"spec": {"budget": {"maxTokensPerGoal": 500}}},
                                "reviewer": {"spec": {"budget": {"maxTokensPerGoal": 700, "maxCostPerDay": 3}}}})
    caller = await Identity(kube, cache_seconds=0).caller("token")  # type: ignore[arg-type]

    assert [a.goal for a in caller.ancestors] == [f"g{n}" for n in range(11, 1, -1)]  # ten, parent first
    assert caller.ancestors[0].budget == {"maxTokensPerGoal": 500, "maxCostPerGoal": 1}  # its own over its Agent's
    assert caller.ancestors[1].budget == {"maxTokensPerGoal": 700, "maxCostPerDay": 3}  # another Agent's; None kept out


async def test_a_loop_or_a_missing_parent_ends_the_walk() -> None:
    loop = {"g12": goal("g12", "a"), "a": goal("a", "b"), "b": goal("b", "a")}
    caller = await Identity(ChainOfGoals(loop, {}), cache_seconds=0).caller("token")  # type: ignore[arg-type]
    assert [a.goal for a in caller.ancestors] == ["a", "b"]

    gone = {"g12": goal("g12", "a"), "a": goal("a", "deleted")}
    caller = await Identity(ChainOfGoals(gone, {}), cache_seconds=0).caller("token")  # type: ignore[arg-type]
    assert [a.goal for a in caller.ancestors] == ["a"]
