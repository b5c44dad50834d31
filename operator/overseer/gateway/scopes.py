"""The budgets one call counts against: its Goal's, each of its ancestors' (the goals above it by
spec.parent: a goal's budget covers its sub-goals), its Agent's for the UTC day, its namespace's
for the UTC day.

The Goal's and the Agent's limits come from their specs (a Goal may override the per-goal limits
of its Agent, never the Agent's daily ones); an ancestor's are its own over its Agent's. A Goal's
budget key is the same whether the call is its own or a sub-goal's, so both count in one total. A namespace's daily limits are the platform team's:
they live in the file OVERSEER_GATEWAY_BUDGETS_FILE (the ConfigMap overseer-gateway-budgets in the
operator's namespace, mounted into the gateway), never in anything a namespace's own editors can
write, such as an annotation on their namespace::

    default: {maxCostPerDay: 50}               # every namespace without a row of its own
    namespaces:
      team-a: {maxCostPerDay: 200, maxTokensPerDay: 20000000}
      sandbox: {maxCostPerDay: 1}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from overseer.mounted_file import MountedYaml

from .identity import Caller
from .ledger import Ledger, Total
from .upstream import Target

GOAL_KEEP_SECONDS = 7 * 24 * 3600  # Redis forgets a goal idle this long; its next call reads the ledger again
DAY_KEEP_SECONDS = 2 * 24 * 3600
_NAMESPACE_FIELDS = {"maxTokensPerDay", "maxCostPerDay"}


@dataclass(frozen=True, slots=True)
class Limits:
    tokens: int | None
    usd: Decimal | None

    @property
    def any(self) -> bool:
        return self.tokens is not None or self.usd is not None


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget: who it belongs to, its limits, and how to read what was spent from the ledger."""

    key: str  # in Redis and in a replica's own accounts; all of a namespace's keys share its hash tag
    owner: str  # "Goal team-a/fix-ci", "Agent team-a/coder for 2026-12-02 (UTC)", ...
    kind: str  # "" (a Goal's), "Parent." (an ancestor's), "Agent." or "Namespace.": with the budget's name,
    # the budget header's value
    tokens_budget: str  # the field that sets the limit, named in refusals
    usd_budget: str
    limits: Limits
    keep_seconds: int
    spent: Callable[[Ledger], Awaitable[Total]]


class BudgetFileError(ValueError):
    """A namespace budget file that cannot be used; the message names the namespace and field."""


def _limits(row: Any, where: str) -> Limits:
    if not isinstance(row, dict):
        raise BudgetFileError(f"{where}: expected a mapping with maxTokensPerDay and/or maxCostPerDay, got {row!r}")
    unknown = set(row) - _NAMESPACE_FIELDS
    if unknown:
        raise BudgetFileError(f"{where}: unknown fields {sorted(unknown)}; expected some of {sorted(_NAMESPACE_FIELDS)}")
    tokens, usd = row.get("maxTokensPerDay"), row.get("maxCostPerDay")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise BudgetFileError(f"{where}.maxTokensPerDay: expected a whole number of tokens of at least 1, got {tokens!r}")
    try:
        cost = None if usd is None or isinstance(usd, bool) else Decimal(str(usd))
    except InvalidOperation:
        cost = None
    if usd is not None and (cost is None or not cost.is_finite() or cost < 0):
        raise BudgetFileError(f"{where}.maxCostPerDay: expected US dollars (a number of at least 0), got {usd!r}")
    return Limits(tokens, cost)


class NamespaceBudgets:
    """Namespace -> daily Limits from the platform's budget file, re-read when it changes."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._file = MountedYaml(path, BudgetFileError)
        self._default = Limits(None, None)
        self._namespaces: dict[str, Limits] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again if it changed; a broken file keeps the last good budgets and raises."""
        if (data := self._file.changed()) is None:
            return
        if not isinstance(data, dict) or set(data) - {"default", "namespaces"}:
            raise BudgetFileError(f"{self._file.path}: expected a mapping with `default` and/or `namespaces`")
        default = _limits(data.get("default") or {}, f"{self._file.path}: default")
        rows = data.get("namespaces") or {}
        if not isinstance(rows, dict):
            raise BudgetFileError(f"{self._file.path}: namespaces: expected a mapping of namespace to budget")
        self._namespaces = {str(ns): _limits(row, f"{self._file.path}: namespaces.{ns}") for ns, row in rows.items()}
        self._default = default

    def limits(self, namespace: str) -> Limits:
        return self._namespaces.get(namespace, self._default)


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")


def _number(value: Any, kind: type) -> Any:
    return None if value is None else kind(str(value)) if kind is Decimal else kind(value)


def _goal_limits(budget: dict[str, Any]) -> Limits:
    return Limits(_number(budget.get("maxTokensPerGoal"), int), _number(budget.get("maxCostPerGoal"), Decimal))


def goal_limits(caller: Caller, target: Target) -> Limits:
    """The Goal's per-goal budget over its Agent's."""
    return _goal_limits({**(target.budget or {}), **{k: v for k, v in (caller.budget or {}).items() if v is not None}})


def _goal_scope(uid: str, owner: str, kind: str, limits: Limits) -> Scope:
    return Scope(f"goal:{uid}", owner, kind, "maxTokensPerGoal", "maxCostPerGoal", limits, GOAL_KEEP_SECONDS,
                 lambda ledger: ledger.goal_total(uid))


def scopes(caller: Caller, target: Target, namespaces: NamespaceBudgets, day: str) -> list[Scope]:
    """Every budget with a limit that this call counts against, the Goal's first, then its ancestors'
    (at most MAX_SUBGOAL_DEPTH), its Agent's and its namespace's."""
    agent = target.budget or {}
    ns, name = caller.namespace, caller.agent
    found = [
        _goal_scope(caller.goal_uid, f"Goal {caller.goal_key}", "", goal_limits(caller, target)),
        *(_goal_scope(a.goal_uid, f"Goal {ns}/{a.goal} (with its sub-goals, among them {caller.goal})", "Parent.",
                      _goal_limits(a.budget)) for a in caller.ancestors),
        Scope(f"agent:{name}:{day}", f"Agent {ns}/{name} for {day} (UTC)", "Agent.", "maxTokensPerDay",
              "maxCostPerDay",
              Limits(_number(agent.get("maxTokensPerDay"), int), _number(agent.get("maxCostPerDay"), Decimal)),
              DAY_KEEP_SECONDS, lambda ledger: ledger.day_total(ns, day, name)),
        Scope(f"namespace:{day}", f"namespace {ns} for {day} (UTC; ConfigMap overseer-gateway-budgets)",
              "Namespace.", "maxTokensPerDay", "maxCostPerDay", namespaces.limits(ns), DAY_KEEP_SECONDS,
              lambda ledger: ledger.day_total(ns, day)),
    ]
    return [scope for scope in found if scope.limits.any]
