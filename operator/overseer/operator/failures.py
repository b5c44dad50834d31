"""A reconcile that keeps failing says so on its object, not only in the operator's log.

The work queue retries a failed reconcile with backoff; a conflict or a dropped connection
clears itself on the next try. An error that comes back the same way (a value the code cannot
handle, a child object the API server refuses) would otherwise leave the object looking
healthy while nothing happens: after a few identical failures it gets a Warning Event naming
the error, once per distinct error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from .events import EventRecorder

REPEATS_BEFORE_EVENT = 3
REASON = "ReconcileFailed"

K = TypeVar("K", bound=Hashable)


def reported(reconcile: Callable[[K], Awaitable[float | None]], lookup: Callable[[K], dict[str, Any] | None],
             events: EventRecorder) -> Callable[[K], Awaitable[float | None]]:
    """`reconcile`, recording a Warning Event on the object once the same error repeats."""
    streaks: dict[K, tuple[str, int]] = {}

    async def run(key: K) -> float | None:
        try:
            result = await reconcile(key)
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            last, count = streaks.get(key, ("", 0))
            count = count + 1 if text == last else 1
            streaks[key] = (text, count)
            obj = lookup(key)
            if count == REPEATS_BEFORE_EVENT and obj is not None:
                events.record(obj, "Warning", REASON,
                              f"reconcile failed {count} times in a row, retried with backoff: {text}")
            raise
        streaks.pop(key, None)
        return result

    return run
