"""A reconcile that keeps failing says so on its object, not only in the operator's log.

The work queue retries a failed reconcile with backoff; a conflict or a dropped connection
clears itself on the next try. An error that comes back the same way (a value the code cannot
handle, a child object the API server refuses) would otherwise leave the object looking
healthy while nothing happens: after a few identical failures it gets a Warning Event naming
the error, once per distinct error, saying what the user can change when the error says so (a
ResourceQuota, an admission policy or webhook, a permission).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from overseer.kube import ApiError

from .events import EventRecorder

REPEATS_BEFORE_EVENT = 3
REASON = "ReconcileFailed"

K = TypeVar("K", bound=Hashable)

VERBS = {"POST": "create", "PUT": "replace", "PATCH": "write", "DELETE": "delete", "GET": "read"}

# What the API server's answer says stopped the write, and what to change: (pattern, fix).
FIXES = [
    (re.compile(r"exceeded quota: ([\w.-]+)"),
     "raise or remove ResourceQuota {0} in namespace {ns}: it leaves no room for the objects the operator makes "
     "for this {kind}"),
    (re.compile(r"ValidatingAdmissionPolicy '([^']+)' with binding '([^']+)' denied"),
     "change ValidatingAdmissionPolicy {0} (binding {1}) so that it admits what the operator writes for this {kind}"),
    (re.compile(r'admission webhook "([^"]+)" denied'),
     "change admission webhook {0} so that it admits what the operator writes for this {kind}"),
    (re.compile(r"(User \"[^\"]+\") cannot"),
     "grant the operator's ServiceAccount ({0}) that permission"),
]


def describe(error: Exception, obj: dict[str, Any]) -> str:
    """The error as the object's owner can act on it: for a refused write, which object the operator
    could not write, the API server's words, and the fix when they point to one."""
    meta = obj.get("metadata") or {}
    kind, ns = obj.get("kind") or "object", meta.get("namespace") or ""
    if not isinstance(error, ApiError):
        return f"{type(error).__name__}: {error}"
    parts = error.path.split("?", 1)[0].strip("/").split("/")
    # /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME[/SUB]]: the part after the namespace
    inside = parts[parts.index("namespaces") + 2:] if "namespaces" in parts else []
    target = "/".join(inside or parts[-2:])
    text = f"the API server refused to {VERBS.get(error.method, error.method)} {target} ({error.status} " \
           f"{error.reason}): {error.message}"
    for pattern, fix in FIXES:
        found = pattern.search(error.message)
        if found:
            return f"{text}; to fix it, {fix.format(*found.groups(), ns=ns, kind=kind)}"
    return text


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
                meta = obj.get("metadata") or {}
                events.record(obj, "Warning", REASON,
                              f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}: reconcile "
                              f"failed {count} times in a row, retried with backoff: {describe(e, obj)}")
            raise
        streaks.pop(key, None)
        return result

    return run
