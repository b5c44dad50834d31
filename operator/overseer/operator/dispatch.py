"""Pure decisions of goal dispatch: dependencies, cycles, queue order, attempts, backoff."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overseer.api import Phase

TERMINAL = {p.value for p in Phase if p.terminal}


def find_cycle(start: str, edges: Callable[[str], Iterable[str]]) -> list[str] | None:
    """The path start -> ... -> start if start lies on a cycle of edges, else None."""
    stack: list[tuple[str, Iterable[str]]] = [(start, iter(edges(start)))]
    path = [start]
    seen = {start}
    while stack:
        node, children = stack[-1]
        child = next(iter(children), None)
        if child is None:
            stack.pop()
            path.pop()
            continue
        if child == start:
            return path + [start]
        if child not in seen:
            seen.add(child)
            stack.append((child, iter(edges(child))))
            path.append(child)
    return None


def describe_cycle(cycle: list[str], shown: int = 8) -> str:
    """A cycle as `a -> b -> c -> a`; a long one keeps its ends and says how many it leaves out,
    so that a 500-goal cycle fits a condition message."""
    if len(cycle) <= 2 * shown:
        return " -> ".join(cycle)
    return " -> ".join([*cycle[:shown], f"... ({len(cycle) - 2 * shown} more)", *cycle[-shown:]])


@dataclass(frozen=True)
class Dependencies:
    waiting: list[str] = field(default_factory=list)   # not succeeded yet (or not there yet)
    failed: list[str] = field(default_factory=list)    # failed or cancelled: this goal cannot run
    cycle: list[str] | None = None                     # start -> ... -> start

    @property
    def met(self) -> bool:
        return not (self.waiting or self.failed or self.cycle)


def check_dependencies(name: str, depends_on: list[str], phase_of: Callable[[str], str | None],
                       depends_on_of: Callable[[str], list[str]]) -> Dependencies:
    """Where this goal stands with its dependencies. phase_of returns None for a missing goal."""
    cycle = find_cycle(name, lambda n: depends_on if n == name else depends_on_of(n))
    waiting, failed = [], []
    for dep in depends_on:
        phase = phase_of(dep)
        if phase == Phase.SUCCEEDED.value:
            continue
        if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
            failed.append(dep)
        else:
            waiting.append(dep)
    return Dependencies(waiting=waiting, failed=failed, cycle=cycle)


def backoff_seconds(failed_attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after failed_attempts failures: base, 2*base, 4*base ... cap."""
    return min(cap, base * 2.0 ** max(0, failed_attempts - 1))


@dataclass(frozen=True)
class PodOutcome:
    state: str                 # "live", "succeeded" or "failed"
    exit_code: int | None = None
    reason: str = ""


# A container waiting for one of these never starts on its own (a missing Secret or key, an image
# reference the kubelet cannot parse): the attempt has failed, or the goal would stay Running.
STUCK_WAITING = {"CreateContainerConfigError", "CreateContainerError", "InvalidImageName", "ErrImageNeverPull"}


def pod_outcome(pod: Mapping[str, Any]) -> PodOutcome:
    """What a goal pod says about its attempt."""
    status = pod.get("status") or {}
    stuck = next((cs["state"]["waiting"] for cs in status.get("containerStatuses") or []
                  if (cs.get("state") or {}).get("waiting", {}).get("reason") in STUCK_WAITING), None)
    if stuck is not None and status.get("phase", "Pending") == "Pending":
        detail = f": {stuck['message']}" if stuck.get("message") else ""
        return PodOutcome("failed", None, f"{stuck['reason']}{detail}")
    phase = status.get("phase", "Pending")
    terminated = next((cs.get("state", {}).get("terminated") for cs in status.get("containerStatuses") or []
                       if cs.get("state", {}).get("terminated")), None)
    code = terminated.get("exitCode") if terminated else None
    if phase == "Succeeded":
        return PodOutcome("succeeded", 0 if code is None else code)
    if phase == "Failed":
        reason = status.get("reason") or (terminated or {}).get("reason") or "Error"
        return PodOutcome("failed", code, reason)
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return PodOutcome("failed", code, "PodDeleted")
    return PodOutcome("live")


def attempt_of(pod: Mapping[str, Any], label: str) -> int:
    try:
        return int(pod["metadata"]["labels"][label])
    except (KeyError, ValueError):
        return 0


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
