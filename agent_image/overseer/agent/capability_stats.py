"""How the goal's Capability calls go: counts, failures and recent latencies per Capability,
reported in the Goal's status (status.capabilityCalls) for the operator to sum up."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from overseer.api.goal import RECENT_CALLS

from .tools.base import ToolResult

Report = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass
class _Tally:
    calls: int = 0
    failures: int = 0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_CALLS))


class CallStats:
    """Per-Capability tallies of one goal; each call is reported as it ends."""

    def __init__(self, report: Report | None = None) -> None:
        self._tallies: dict[str, _Tally] = {}
        self._report = report

    def restore(self, reported: list[dict[str, Any]]) -> None:
        """Carry on from what an earlier attempt of the goal reported."""
        for entry in reported:
            tally = self._tallies.setdefault(entry["name"], _Tally())
            tally.calls, tally.failures = int(entry.get("calls") or 0), int(entry.get("failures") or 0)
            tally.recent.extend(int(ms) for ms in entry.get("recentMs") or [])

    async def timed(self, capability: str, call: Awaitable[ToolResult]) -> ToolResult:
        """Run one call of a Capability, counting it (an exception counts as a failure)."""
        started = time.monotonic()
        failed = True
        try:
            result = await call
            failed = result.is_error
            return result
        finally:
            tally = self._tallies.setdefault(capability, _Tally())
            tally.calls += 1
            tally.failures += int(failed)
            tally.recent.append(round((time.monotonic() - started) * 1000))
            if self._report is not None:
                await self._report(self.status())

    def status(self) -> list[dict[str, Any]]:
        """status.capabilityCalls."""
        return [{"name": name, "calls": t.calls, "failures": t.failures, "recentMs": list(t.recent)}
                for name, t in sorted(self._tallies.items())]
