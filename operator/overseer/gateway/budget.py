"""Budgets and cost: a call is reserved before it is forwarded and settled from its usage.

A Goal's budget (spec.budget of the Goal over that of its Agent: maxTokensPerGoal,
maxCostPerGoal) covers all its attempts. Before a call goes out, its worst case is held: the
input estimated from the request's size plus max_tokens of output, priced as if all input were
written to the 1-hour cache. A call whose worst case does not fit next to what was spent and
what calls in flight hold is refused with HTTP 402 (the header in overseer.api.gateway names
the budget) and the agent ends the goal with reason BudgetExhausted. When the answer is in, the
hold is released and the real cost (cache-aware, prices.py) is added and written to the ledger.

With Redis (counters.py) the spend and the holds of every Goal are shared by all replicas and
checked in one atomic step. Without it, or while it is down, each replica counts alone: totals
come from the ledger and are read again every `refresh_seconds`, so the spend of other replicas
is seen within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from overseer.api.gateway import BUDGET_HEADER

from . import metrics
from .counters import CountersUnavailable, RedisCounters, Refused
from .errors import GatewayError
from .identity import Caller
from .ledger import Ledger, LedgerUnavailable, Spend
from .prices import PriceTable
from .upstream import Target

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 4  # a request's size over-estimates its input tokens: JSON keys and quoting count too
MAX_IDLE_ACCOUNTS = 20_000


@dataclass
class Account:
    """What one Goal spent (from the ledger, plus this replica's calls since) and holds now."""

    spent_tokens: int
    spent_usd: Decimal
    read_at: float
    held_tokens: int = 0
    held_usd: Decimal = Decimal(0)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Limits:
    tokens: int | None
    usd: Decimal | None


@dataclass
class Reservation:
    caller: Caller
    model: str
    request_id: str
    tokens: int
    usd: Decimal
    account: Account | None  # held in this replica's own account
    shared: bool = False  # held in the Redis counters


def limits(caller: Caller, target: Target) -> Limits:
    """The Goal's budget over its Agent's."""
    merged = {**(target.budget or {}), **{k: v for k, v in (caller.budget or {}).items() if v is not None}}
    tokens, usd = merged.get("maxTokensPerGoal"), merged.get("maxCostPerGoal")
    return Limits(int(tokens) if tokens is not None else None, Decimal(str(usd)) if usd is not None else None)


def _usd(amount: Decimal) -> str:
    return f"${amount:.4f}"


class Meter:
    """The gateway's meter: budgets per Goal, cost of every call into the ledger."""

    def __init__(self, ledger: Ledger, prices: PriceTable, refresh_seconds: float = 5.0,
                 on_spend: Any = None, counters: RedisCounters | None = None) -> None:
        self._ledger = ledger
        self._prices = prices
        self._refresh = refresh_seconds
        self._counters = counters
        self._missed: set[str] = set()  # Goals whose spend did not reach Redis (it was down)
        self._accounts: dict[str, Account] = {}
        self._on_spend = on_spend  # called with each Spend (cost in status)

    async def reserve(self, caller: Caller, target: Target, body: bytes, request_id: str) -> Reservation:
        try:
            request = orjson.loads(body)
            model = str(request.get("model") or target.model)
            max_tokens = int(request.get("max_tokens") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise GatewayError(400, "request body must be a JSON object with model and max_tokens") from None
        price = self._prices.price(model)
        budget = limits(caller, target)
        if budget.usd is not None and price is None:
            raise GatewayError(400, f"Goal {caller.goal_key} has a money budget (maxCostPerGoal) but model "
                                    f"{model!r} has no price: add it to the gateway's price table "
                                    "(ConfigMap overseer-gateway-prices)")
        hold_tokens = len(body) // BYTES_PER_TOKEN + max_tokens
        hold_usd = price.most(len(body) // BYTES_PER_TOKEN, max_tokens) if price else Decimal(0)
        reservation = Reservation(caller, model, request_id, hold_tokens, hold_usd, None)
        if budget.tokens is None and budget.usd is None:
            return reservation
        if self._counters is not None:
            try:
                reservation.shared = await self._hold_shared(caller, budget, reservation)
            except CountersUnavailable as e:
                log.warning("budget counters (Redis) unavailable, this replica counts alone: %s", e)
                self._missed.add(caller.goal_uid)
        if not reservation.shared:
            account = reservation.account = await self._account(caller.goal_uid)
            async with account.lock:  # check and hold in one step: concurrent calls see each other
                _check(caller, budget, account, hold_tokens, hold_usd)
                account.held_tokens += hold_tokens
                account.held_usd += hold_usd
        return reservation

    async def _hold_shared(self, caller: Caller, budget: Limits, r: Reservation) -> bool:
        assert self._counters is not None
        if caller.goal_uid in self._missed:  # spent while Redis was down: the ledger knows, Redis does not
            await self._counters.forget(caller.goal_uid)
            self._missed.discard(caller.goal_uid)
        for _ in range(2):
            answer = await self._counters.hold(caller.goal_uid, r.request_id, r.tokens, r.usd, budget.tokens,
                                               budget.usd)
            if answer is None:
                return True
            if isinstance(answer, Refused):
                _check(caller, budget, Account(answer.spent_tokens, answer.spent_usd, 0.0, answer.held_tokens,
                                               answer.held_usd), r.tokens, r.usd)
                raise AssertionError("Redis refused a hold that fits")  # _check raised: unreachable
            try:
                total = await self._ledger.goal_total(caller.goal_uid)
            except LedgerUnavailable as e:
                raise _ledger_unavailable(e) from e
            await self._counters.load(caller.goal_uid, total.tokens, total.cost_usd)
        return False

    async def settle(self, reservation: Reservation, usage: dict[str, Any], model: str) -> None:
        caller, model = reservation.caller, model or reservation.model
        price = self._prices.price(model)
        split = usage.get("cache_creation") or {}
        hour = int(split.get("ephemeral_1h_input_tokens") or 0)
        spend = Spend(
            reservation.request_id, caller.namespace, caller.agent, caller.goal, caller.goal_uid, caller.pod, model,
            int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
            int(usage.get("cache_read_input_tokens") or 0),
            int(usage.get("cache_creation_input_tokens") or 0) - hour, hour,
            price.cost(usage) if price else Decimal(0))
        if reservation.shared and self._counters is not None:
            try:
                await self._counters.settle(caller.goal_uid, reservation.request_id, reservation.tokens,
                                            reservation.usd, spend.tokens, spend.cost_usd)
            except CountersUnavailable as e:  # the hold lapses by itself; the ledger has the spend
                log.warning("budget counters (Redis) unavailable when settling %s: %s", reservation.request_id, e)
                self._missed.add(caller.goal_uid)
        account = reservation.account
        if account is not None:
            account.held_tokens -= reservation.tokens
            account.held_usd -= reservation.usd
            account.spent_tokens += spend.tokens
            account.spent_usd += spend.cost_usd
        if usage:
            self._ledger.record(spend)
            metrics.spent(spend)
            if self._on_spend is not None:
                self._on_spend(spend)

    async def _account(self, goal_uid: str) -> Account:
        account = self._accounts.get(goal_uid)
        now = time.monotonic()
        if account is not None and now - account.read_at < self._refresh:
            return account
        try:
            total = await self._ledger.goal_total(goal_uid)
        except LedgerUnavailable as e:
            if account is not None:
                return account  # keep counting locally until PostgreSQL is back
            raise _ledger_unavailable(e) from e
        if account is None:
            if len(self._accounts) >= MAX_IDLE_ACCOUNTS:
                self._forget_idle()
            account = self._accounts.setdefault(goal_uid, Account(total.tokens, total.cost_usd, now))
        # The ledger's total includes this replica's settled calls (written or queued), not the held ones.
        account.spent_tokens, account.spent_usd, account.read_at = total.tokens, total.cost_usd, now
        return account

    def _forget_idle(self) -> None:
        for uid in [uid for uid, a in self._accounts.items() if not a.held_tokens and not a.lock.locked()]:
            del self._accounts[uid]


def _ledger_unavailable(e: Exception) -> GatewayError:
    return GatewayError(503, "the gateway cannot check this goal's budget: its spend ledger "
                             f"(PostgreSQL) is unavailable ({e}); try again shortly")


def _check(caller: Caller, budget: Limits, account: Account, tokens: int, usd: Decimal) -> None:
    if budget.usd is not None and account.spent_usd + account.held_usd + usd > budget.usd:
        raise budget_exhausted(
            caller, "maxCostPerGoal",
            f"budget maxCostPerGoal {_usd(budget.usd)} of Goal {caller.goal_key} is exhausted: "
            f"{_usd(account.spent_usd)} spent, {_usd(account.held_usd)} held by calls in flight, and this call "
            f"may cost up to {_usd(usd)}")
    if budget.tokens is not None and account.spent_tokens + account.held_tokens + tokens > budget.tokens:
        raise budget_exhausted(
            caller, "maxTokensPerGoal",
            f"budget maxTokensPerGoal {budget.tokens} of Goal {caller.goal_key} is exhausted: "
            f"{account.spent_tokens} tokens spent, {account.held_tokens} held by calls in flight, and this call "
            f"may use up to {tokens} (input estimate + max_tokens)")


def budget_exhausted(caller: Caller, budget: str, message: str) -> GatewayError:
    """402 billing_error: the SDK does not retry it; the header tells the agent which budget."""
    metrics.BUDGET_REFUSALS.labels(caller.namespace, caller.agent, budget).inc()
    return GatewayError(402, message, "billing_error", headers={BUDGET_HEADER: budget})
