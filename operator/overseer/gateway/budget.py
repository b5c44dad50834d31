"""Budgets and cost: a call is reserved before it is forwarded and settled from its usage.

A call counts against every budget with a limit (scopes.py): its Goal's (spec.budget of the Goal
over that of its Agent: maxTokensPerGoal, maxCostPerGoal, across all attempts and sub-goals), each
ancestor goal's in the same way (a sub-goal's call counts toward its parent's budget, and that
one's parent's), its Agent's for the UTC day (maxTokensPerDay, maxCostPerDay) and its namespace's
for the UTC day (the platform's budget file). Before a call goes out, its worst case is held in all of them: the input estimated from the
request's size plus max_tokens of output, priced as if all input were written to the 1-hour cache.
A call whose worst case does not fit next to what was spent and what calls in flight hold is
refused with HTTP 402 (the header in overseer.api.gateway names the budget) and the agent ends the
goal with reason BudgetExhausted, but only when what was spent leaves no room for it: when the holds
of calls in flight alone stand in the way (a goal's own call cut by a replica's death, whose hold
lapses soon after; a lease's unused part), it is answered 429 with a retry-after, which the agent
waits out and asks again. When the answer is in, the hold is released and the real cost
(cache-aware, overseer.prices) is added and written to the ledger.

With Redis (counters.py) the spend and the holds of every budget are shared by all replicas and
checked in one atomic step, so spend passes a budget by at most what calls in flight use beyond
their holds (nothing, as a call cannot use more than its hold). Far from its limits a hold is a
lease of several calls' worst cases (leases.py), from which the next calls of the same budgets on
this replica are held without a round trip. Without it, or while it is down,
each replica counts alone: totals come from the ledger and are read again every
`refresh_seconds`, so a budget may also be passed by what the other replicas spend within that
time. A budget this replica has not counted yet, with neither Redis nor the ledger answering,
refuses the call (503, which the SDK retries): the gateway does not spend blind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from overseer.api.gateway import BUDGET_HEADER
from overseer.prices import PriceTable

from . import metrics
from .counters import CountersUnavailable, RedisCounters, Refused, nano
from .errors import GatewayError
from .identity import Caller
from .leases import Lease, Leases, lease_key
from .ledger import Ledger, LedgerUnavailable, Spend
from .scopes import NamespaceBudgets, Scope, scopes, utc_day
from .upstream import Target

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 4  # a request's size over-estimates its input tokens: JSON keys and quoting count too
MAX_IDLE_ACCOUNTS = 20_000
LOCAL_HOLDS_RETRY_SECONDS = 5.0  # without Redis the holds are this replica's own calls in flight
FILE_CHECK_SECONDS = 1.0


@dataclass
class Account:
    """What one budget spent (from the ledger, plus this replica's calls since) and holds now."""

    spent_tokens: int
    spent_usd: Decimal
    read_at: float
    held_tokens: int = 0
    held_usd: Decimal = Decimal(0)


@dataclass
class Reservation:
    caller: Caller
    model: str
    request_id: str
    tokens: int
    usd: Decimal
    scopes: list[Scope]
    accounts: list[Account] = field(default_factory=list)  # held in this replica's own accounts
    lease: Lease | None = None  # held in the Redis counters, in this lease


def _usd(amount: Decimal) -> str:
    return f"${amount:.4f}"


class Meter:
    """The gateway's meter: budgets per Goal, Agent and namespace, cost of every call into the ledger."""

    def __init__(self, ledger: Ledger, prices: PriceTable, refresh_seconds: float = 5.0,
                 on_spend: Any = None, counters: RedisCounters | None = None,
                 namespaces: NamespaceBudgets | None = None, lease_calls: int = 1, lease_seconds: float = 5.0) -> None:
        self._ledger = ledger
        self._prices = prices
        self._refresh = refresh_seconds
        self._counters = counters
        self._leases = Leases(counters, lease_calls, lease_seconds, on_lost=self._lost) if counters else None
        self._namespaces = namespaces or NamespaceBudgets()
        self._missed: set[str] = set()  # budgets whose spend did not reach Redis (it was down)
        self._accounts: dict[str, Account] = {}
        self._on_spend = on_spend  # called with each Spend (cost in status)
        self._files_checked = 0.0
        # How long a call that only holds stand in the way is asked to wait: in Redis, the time a dead
        # replica's hold takes to lapse.
        self._holds_retry = counters.live_seconds if counters else LOCAL_HOLDS_RETRY_SECONDS

    def _check_files(self) -> None:
        """Pick up a changed price table or budget file (mounted ConfigMaps change in place)."""
        now = time.monotonic()
        if now - self._files_checked < FILE_CHECK_SECONDS:
            return
        self._files_checked = now
        for table in (self._prices, self._namespaces):
            try:
                table.reload()
            except (ValueError, OSError) as e:  # PriceTableError, BudgetFileError, a file gone
                log.warning("%s; the last good one stays in use", e)

    async def reserve(self, caller: Caller, target: Target, body: bytes, request_id: str) -> Reservation:
        try:
            request = orjson.loads(body)
            model = str(request.get("model") or target.model)
            max_tokens = int(request.get("max_tokens") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            raise GatewayError(400, "request body must be a JSON object with model and max_tokens") from None
        self._check_files()
        price = self._prices.price(model)
        budgets = scopes(caller, target, self._namespaces, utc_day())
        money = next((scope for scope in budgets if scope.limits.usd is not None), None)
        if money is not None and price is None:
            raise GatewayError(400, f"{money.owner} has a money budget ({money.usd_budget}) but model {model!r} "
                                    "has no price: add it to the gateway's price table (ConfigMap "
                                    f"overseer-gateway-prices, key {model})")
        hold_tokens = len(body) // BYTES_PER_TOKEN + max_tokens
        hold_usd = price.most(len(body) // BYTES_PER_TOKEN, max_tokens) if price else Decimal(0)
        reservation = Reservation(caller, model, request_id, hold_tokens, hold_usd, budgets)
        if not budgets:
            return reservation
        if self._counters is not None:
            try:
                reservation.lease = await self._hold_shared(caller, reservation)
            except CountersUnavailable as e:
                log.warning("budget counters (Redis) unavailable, this replica counts alone: %s", e)
                self._missed.update(self._key(caller, scope) for scope in budgets)
        if reservation.lease is None:
            accounts = [await self._account(self._key(caller, scope), scope) for scope in budgets]
            # Check and hold with no await in between: concurrent calls on this replica see each other.
            for scope, account in zip(budgets, accounts):
                _check(caller, scope, account, hold_tokens, hold_usd, LOCAL_HOLDS_RETRY_SECONDS)
            for account in accounts:
                account.held_tokens += hold_tokens
                account.held_usd += hold_usd
            reservation.accounts = accounts
        return reservation

    @staticmethod
    def _key(caller: Caller, scope: Scope) -> str:
        return f"{caller.namespace}:{scope.key}"

    async def _hold_shared(self, caller: Caller, r: Reservation) -> Lease | None:
        counters, leases = self._counters, self._leases
        assert counters is not None and leases is not None
        key, nanos = lease_key(caller.namespace, r.scopes), nano(r.usd)
        if (lease := leases.draw(key, r.tokens, nanos)) is not None:
            return lease
        for scope in r.scopes:  # spent while Redis was down: the ledger knows, Redis does not
            if self._key(caller, scope) in self._missed:
                await counters.forget(caller.namespace, scope)
                self._missed.discard(self._key(caller, scope))

        async def load(i: int) -> None:  # the budget's spend from the ledger, which Redis does not have yet
            scope = r.scopes[i]
            try:
                total = await scope.spent(self._ledger)
            except LedgerUnavailable as e:
                raise _ledger_unavailable(scope, e) from e
            await counters.load(caller.namespace, scope, total.tokens, total.cost_usd)

        answer = await leases.take(key, r.scopes, r.request_id, r.tokens, nanos, load)
        if isinstance(answer, Lease):
            return answer
        if isinstance(answer, Refused):
            scope = r.scopes[answer.scope]
            _check(caller, scope, Account(answer.spent_tokens, answer.spent_usd, 0.0, answer.held_tokens,
                                          answer.held_usd), r.tokens, r.usd, self._holds_retry)
            raise AssertionError("Redis refused a hold that fits")  # _check raised: unreachable
        return None  # still not loaded after loading each budget: count locally

    def _lost(self, lease: Lease) -> None:
        """Redis did not take what a lease's calls spent: those budgets are read from the ledger again."""
        self._missed.update(f"{lease.namespace}:{scope.key}" for scope in lease.scopes)

    async def close(self) -> None:
        """Give back what leases hold beyond their calls and count what they spent (on shutdown)."""
        if self._leases is not None:
            await self._leases.close()

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
            price.cost(usage) if price else Decimal(0), tuple(a.goal_uid for a in caller.ancestors),
            tuple(a.goal for a in caller.ancestors))
        if reservation.lease is not None and self._leases is not None:
            # Redis unavailable: the holds lapse by themselves and the budgets are read from the ledger again.
            await self._leases.settle(reservation.lease, reservation.tokens, nano(reservation.usd), spend.tokens,
                                      nano(spend.cost_usd))
        for account in reservation.accounts:
            account.held_tokens -= reservation.tokens
            account.held_usd -= reservation.usd
            account.spent_tokens += spend.tokens
            account.spent_usd += spend.cost_usd
        if usage:
            self._ledger.record(spend)
            metrics.spent(spend)
            if self._on_spend is not None:
                self._on_spend(spend)

    async def _account(self, key: str, scope: Scope) -> Account:
        account = self._accounts.get(key)
        now = time.monotonic()
        if account is not None and now - account.read_at < self._refresh:
            return account
        try:
            total = await scope.spent(self._ledger)
        except LedgerUnavailable as e:
            if account is not None:
                return account  # keep counting locally until PostgreSQL is back
            raise _ledger_unavailable(scope, e) from e
        account = self._accounts.get(key)  # another call may have made it meanwhile
        if account is None:
            if len(self._accounts) >= MAX_IDLE_ACCOUNTS:
                self._forget_idle()
            account = self._accounts[key] = Account(total.tokens, total.cost_usd, now)
        # The ledger's total includes this replica's settled calls (written or queued), not the held ones.
        account.spent_tokens, account.spent_usd, account.read_at = total.tokens, total.cost_usd, now
        return account

    def _forget_idle(self) -> None:
        for key in [key for key, a in self._accounts.items() if not a.held_tokens and not a.held_usd]:
            del self._accounts[key]


def _ledger_unavailable(scope: Scope, e: Exception) -> GatewayError:
    return GatewayError(503, f"the gateway cannot check the budget of {scope.owner}: its spend ledger "
                             f"(PostgreSQL) is unavailable ({e}); try again shortly")


def _check(caller: Caller, scope: Scope, account: Account, tokens: int, usd: Decimal, holds_retry: float) -> None:
    limits = scope.limits
    if limits.usd is not None and account.spent_usd + account.held_usd + usd > limits.usd:
        if account.spent_usd + usd <= limits.usd:
            raise held_up(caller, holds_retry,
                          f"budget {scope.usd_budget} {_usd(limits.usd)} of {scope.owner} has "
                          f"{_usd(limits.usd - account.spent_usd)} left, but calls in flight hold "
                          f"{_usd(account.held_usd)} of it and this call may cost up to {_usd(usd)}")
        raise budget_exhausted(
            caller, scope.kind + scope.usd_budget,
            f"budget {scope.usd_budget} {_usd(limits.usd)} of {scope.owner} is exhausted: "
            f"{_usd(account.spent_usd)} spent, {_usd(account.held_usd)} held by calls in flight, and this call "
            f"may cost up to {_usd(usd)}")
    if limits.tokens is not None and account.spent_tokens + account.held_tokens + tokens > limits.tokens:
        if account.spent_tokens + tokens <= limits.tokens:
            raise held_up(caller, holds_retry,
                          f"budget {scope.tokens_budget} {limits.tokens} of {scope.owner} has "
                          f"{limits.tokens - account.spent_tokens} tokens left, but calls in flight hold "
                          f"{account.held_tokens} of them and this call may use up to {tokens}")
        raise budget_exhausted(
            caller, scope.kind + scope.tokens_budget,
            f"budget {scope.tokens_budget} {limits.tokens} of {scope.owner} is exhausted: "
            f"{account.spent_tokens} tokens spent, {account.held_tokens} held by calls in flight, and this call "
            f"may use up to {tokens} (input estimate + max_tokens)")


def held_up(caller: Caller, retry_after: float, message: str) -> GatewayError:
    """429 with retry-after: the budget has room once calls in flight settle or their holds lapse (a
    replica that died holding them); the agent waits and asks again rather than end its goal."""
    metrics.BUDGET_WAITS.labels(caller.namespace, caller.agent).inc()
    return GatewayError(429, f"{message}: try again in {retry_after:.0f} s, once they are settled or have "
                             f"lapsed", retry_after=retry_after)


def budget_exhausted(caller: Caller, budget: str, message: str) -> GatewayError:
    """402 billing_error: the SDK does not retry it; the header tells the agent which budget."""
    metrics.BUDGET_REFUSALS.labels(caller.namespace, caller.agent, budget).inc()
    return GatewayError(402, message, "billing_error", headers={BUDGET_HEADER: budget})
