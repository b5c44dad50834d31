"""Budget leases: a replica holds a few calls' worst cases of a set of budgets ahead, so most calls
are held without a Redis round trip between the agent's request and the model.

A call that finds no lease with room asks Redis as before (counters.py), for up to `units` times
its worst case at once, never more than a `share`-th of what is free in any of its budgets; near
a limit that is just its own hold, exactly as without leases. The next calls of the same budgets
(same namespace, scopes and limits) on this replica draw their worst case from the lease locally
while it has room, and settle into it locally. The lease is a hold like any other, so every
replica counts it: spend stays within what is held, and a budget is still never exceeded by more
than the calls in flight.

A lease takes new calls for `seconds` at most (a new one is taken in the background when it is
half drawn or expires in use); then it retires: in one Redis step its hold shrinks to the worst
cases of its calls still in flight (with the lapse of a call's hold) and what its settled calls
spent moves into the spend, and when its last call is settled the rest is released the same way.
An active lease lapses after `lapse_seconds` in Redis, so the unused part of a dead replica's
lease comes back soon. While a replica holds anything in Redis it keeps its holds alive every third
of the counters' `live_seconds`: a call's hold outlives its replica by that much at most, not by
the longest a call may take. What a lease costs: other replicas see a lease's unused part as held until
it retires, so near a limit a call may be refused while up to a `share`-th of the free budget sits
in another replica's lease for up to `seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .counters import CountersUnavailable, RedisCounters, Refused, Unknown
from .errors import request_id

if TYPE_CHECKING:
    from .scopes import Scope

log = logging.getLogger(__name__)

LeaseKey = tuple[str, tuple[tuple[str, object], ...]]  # namespace, (scope key, limits) of each budget


def lease_key(namespace: str, scopes: list[Scope]) -> LeaseKey:
    return namespace, tuple((scope.key, scope.limits) for scope in scopes)


@dataclass(eq=False)
class Lease:
    namespace: str
    scopes: list[Scope]
    request_id: str  # of the call that took it; its member in Redis is <id>:<tokens>:<nano-dollars>
    tokens: int  # held in Redis now
    nanos: int
    unit: tuple[int, int]  # the worst case it was sized by
    drawn_tokens: int = 0  # worst cases of its calls in flight plus what its settled calls spent
    drawn_nanos: int = 0
    flight_tokens: int = 0  # worst cases of its calls in flight
    flight_nanos: int = 0
    spent_tokens: int = 0  # settled since its last step in Redis
    spent_nanos: int = 0
    calls: int = 0  # in flight
    used: bool = False  # drew a call after the one that took it
    active: bool = True
    resized: int = 0  # how often its member was replaced
    flushing: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def member(self) -> str:
        suffix = f"~{self.resized}" if self.resized else ""
        return f"{self.request_id}{suffix}:{self.tokens}:{self.nanos}"

    def fits(self, tokens: int, nanos: int) -> bool:
        return self.drawn_tokens + tokens <= self.tokens and self.drawn_nanos + nanos <= self.nanos

    def draw(self, tokens: int, nanos: int) -> None:
        self.drawn_tokens += tokens
        self.drawn_nanos += nanos
        self.flight_tokens += tokens
        self.flight_nanos += nanos
        self.calls += 1


class Leases:
    """This replica's leases, one taking calls per set of budgets."""

    def __init__(self, counters: RedisCounters, units: int, seconds: float, share: int = 16,
                 lapse_seconds: float = 30.0, on_lost: Callable[[Lease], None] | None = None) -> None:
        self._counters = counters
        self.units = units
        self._seconds = seconds
        self._share = share
        self._lapse = max(lapse_seconds, seconds * 2)
        self._on_lost = on_lost  # Redis did not take a lease's spend: the meter reloads those budgets
        self._active: dict[LeaseKey, Lease] = {}
        self._taking: dict[LeaseKey, asyncio.Future[bool]] = {}  # on its way from Redis; True: a lease came
        self._retiring: set[Lease] = set()
        self._keeper: asyncio.Task[None] | None = None

    def draw(self, key: LeaseKey, tokens: int, nanos: int) -> Lease | None:
        """The active lease with room for this call, the call drawn from it; None: ask Redis."""
        lease = self._active.get(key)
        if lease is None or not lease.fits(tokens, nanos):
            return None
        lease.draw(tokens, nanos)
        lease.used = True
        if (lease.drawn_tokens * 2 > lease.tokens or lease.drawn_nanos * 2 > lease.nanos) and key not in self._taking:
            self._renew(key, lease)
        return lease

    async def take(self, key: LeaseKey, scopes: list[Scope], request_id: str, tokens: int, nanos: int,
                   load: Callable[[int], Awaitable[None]]) -> Lease | Refused | Unknown:
        """A call with no room in a lease: hold it in Redis, as a new lease when the budgets have room.
        `load(i)` puts budget i's spend from the ledger into Redis when Redis does not have it yet."""
        while (lease := self.draw(key, tokens, nanos)) is None:  # another call's lease may have come meanwhile
            if (pending := self._taking.get(key)) is None:
                break
            await asyncio.wait([pending])  # a lease is on its way: wait, one lease for all
            if not _worth_waiting(pending):  # near a limit: each call holds its own, side by side
                break
        if lease is not None:
            return lease
        mine = None
        if key not in self._taking:  # calls meanwhile wait for this one, while it loads budgets too
            mine = self._taking[key] = asyncio.get_running_loop().create_future()
        units: int | Refused | Unknown = 0
        try:
            for _ in range(len(scopes) + 1):
                units = await self._counters.lease(key[0], scopes, request_id, tokens, nanos, self.units,
                                                   self._share, self._lapse)
                if not isinstance(units, Unknown):
                    break
                await load(units.scope)
        finally:
            if mine is not None:
                del self._taking[key]
                mine.set_result(isinstance(units, int) and units > 1)
        if not isinstance(units, int):
            return units
        lease = Lease(key[0], scopes, request_id, units * tokens, units * nanos, (tokens, nanos))
        lease.draw(tokens, nanos)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep_alive(), name="budget-holds-alive")
        if units > 1:
            self._start(key, lease)
        else:  # a call's own hold: retired at once, released when the call is settled
            lease.active = False
            self._retiring.add(lease)
        return lease

    async def settle(self, lease: Lease, hold_tokens: int, hold_nanos: int, tokens: int, nanos: int) -> None:
        """A call drawn from `lease` is done: it spent `tokens` and `nanos` of the worst case it drew.
        The last call of a retired lease waits until Redis has it, as a call with a hold of its own does."""
        lease.calls -= 1
        lease.flight_tokens -= hold_tokens
        lease.flight_nanos -= hold_nanos
        lease.drawn_tokens += tokens - hold_tokens
        lease.drawn_nanos += nanos - hold_nanos
        lease.spent_tokens += tokens
        lease.spent_nanos += nanos
        if not lease.active and not lease.calls:
            self._flush(lease)
            if lease.flushing is not None:
                await asyncio.wait([lease.flushing])

    async def close(self) -> None:
        """Retire every lease and wait until Redis has what they spent (on shutdown)."""
        for task in list(self._taking.values()):
            await asyncio.gather(task, return_exceptions=True)
        for key, lease in list(self._active.items()):
            self._retire(key, lease)
        while flushing := [lease.flushing for lease in self._retiring if lease.flushing is not None]:
            await asyncio.gather(*flushing, return_exceptions=True)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    async def _keep_alive(self) -> None:
        """Renew the lapse of every hold this replica has in Redis until it has none (the next take
        starts this again). A replica that dies stops renewing, and its holds lapse soon after."""
        while True:
            await asyncio.sleep(self._counters.live_seconds / 3)
            held = [*self._active.values(), *self._retiring]
            if not held:
                return
            try:
                await self._counters.keep_alive([(lease.namespace, lease.scopes, lease.member) for lease in held])
            except CountersUnavailable as e:  # tried again next time; meanwhile the holds may lapse, as any
                log.warning("budget holds not kept alive, Redis unavailable: %s", e)

    def _start(self, key: LeaseKey, lease: Lease) -> None:
        old = self._active.get(key)
        if old is not None:
            self._retire(key, old)
        self._active[key] = lease
        asyncio.get_running_loop().call_later(self._seconds, self._expire, key, lease)

    def _expire(self, key: LeaseKey, lease: Lease) -> None:
        if lease.active:
            self._retire(key, lease)
            if lease.used and key not in self._taking:
                self._renew(key, lease)  # busy budgets: calls meanwhile wait for it rather than ask Redis

    def _renew(self, key: LeaseKey, lease: Lease) -> None:
        async def renew() -> bool:
            units: int | Refused | Unknown = 0
            try:
                tokens, nanos = lease.unit
                rid = request_id()
                units = await self._counters.lease(key[0], lease.scopes, rid, tokens, nanos, self.units,
                                                   self._share, self._lapse)
                if isinstance(units, int):
                    self._start(key, Lease(key[0], lease.scopes, rid, units * tokens, units * nanos, lease.unit))
            except CountersUnavailable as e:
                log.warning("budget lease not renewed, Redis unavailable: %s", e)
            finally:
                self._taking.pop(key, None)
            return isinstance(units, int) and units > 1

        if key not in self._taking:
            self._taking[key] = asyncio.get_running_loop().create_task(renew())

    def _retire(self, key: LeaseKey, lease: Lease) -> None:
        lease.active = False
        if self._active.get(key) is lease:
            del self._active[key]
        self._retiring.add(lease)
        self._flush(lease)

    def _flush(self, lease: Lease) -> None:
        if lease.flushing is None:
            lease.flushing = asyncio.get_running_loop().create_task(self._flush_steps(lease))

    async def _flush_steps(self, lease: Lease) -> None:
        """Shrink the hold to the calls in flight and count what was spent, until nothing is left."""
        try:
            while True:
                spent, flight = (lease.spent_tokens, lease.spent_nanos), (lease.flight_tokens, lease.flight_nanos)
                member, held = lease.member, (lease.tokens, lease.nanos)
                keep = None
                if lease.calls:
                    lease.resized += 1
                    lease.tokens, lease.nanos = flight
                    keep = (lease.member, *flight)
                await self._counters.resize(lease.namespace, lease.scopes, member, *held, *spent, keep=keep)
                lease.spent_tokens -= spent[0]
                lease.spent_nanos -= spent[1]
                lease.drawn_tokens, lease.drawn_nanos = lease.flight_tokens, lease.flight_nanos
                if keep is None or lease.calls:
                    break  # released, or calls in flight: the last one's settle flushes it again
        except CountersUnavailable as e:  # its holds lapse by themselves; the ledger has the spend
            log.warning("budget lease %s not settled, Redis unavailable: %s", lease.request_id, e)
            if self._on_lost is not None:
                self._on_lost(lease)
            self._retiring.discard(lease)
            return
        finally:
            lease.flushing = None
        if keep is None:
            self._retiring.discard(lease)


def _worth_waiting(taking: asyncio.Future[bool]) -> bool:
    return taking.done() and not taking.cancelled() and taking.exception() is None and taking.result()
