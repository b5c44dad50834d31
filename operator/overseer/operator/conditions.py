"""Conditions as the Kubernetes API conventions describe them."""

from __future__ import annotations

from typing import Any

from overseer.api import Phase
from overseer.kube import now_iso


# A message quotes what it found wrong, and a spec may hold a megabyte in a free-form field
# (spec.inputSchema): quoted whole, in three conditions, it would take the object past etcd's
# 2 MiB and every status write after it would fail.
MESSAGE_MAX = 1024


def shorten(message: str, limit: int = MESSAGE_MAX) -> str:
    """The message, cut to `limit` characters saying how many were left out."""
    if len(message) <= limit:
        return message
    kept = limit - 40  # room for the note
    return f"{message[:kept]}... ({len(message) - kept:,} characters left out)"


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool | str, reason: str,
                  message: str = "", generation: int | None = None) -> list[dict[str, Any]]:
    """A new conditions list with type_ set; lastTransitionTime moves only when status changes."""
    message = shorten(message)
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    old = next((c for c in conditions if c.get("type") == type_), None)
    changed = old is None or old.get("status") != status_text
    new = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": old["lastTransitionTime"] if old is not None and not changed else now_iso(),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


def same_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal apart from timestamps (which only move on a status change anyway)."""
    def strip(cs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"),
                       c.get("observedGeneration")) for c in cs)
    return strip(a) == strip(b)


def condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    c = condition(conditions, type_)
    return c is not None and c.get("status") == "True"


def summarize(conditions: list[dict[str, Any]], ready: bool, reason: str, message: str,
              generation: int | None, stalled: bool = False, ready_message: str | None = None) -> list[dict[str, Any]]:
    """Ready, plus Reconciling while not ready or Stalled when it never will be without a change
    from someone: the conditions kstatus (Flux, cli-utils) reads. Reconciling and Stalled are
    there only while true, as kstatus' convention has it."""
    conds = set_condition(conditions, "Ready", ready, reason, message if ready_message is None else ready_message,
                          generation)
    working = not ready and not stalled
    for type_, wanted in (("Reconciling", working), ("Stalled", stalled)):
        if wanted:
            conds = set_condition(conds, type_, True, reason, message, generation)
        else:
            conds = [c for c in conds if c.get("type") != type_]
    return conds


def summarize_goal(conditions: list[dict[str, Any]], phase: str, reason: str, message: str,
                   generation: int | None) -> list[dict[str, Any]]:
    """summarize() for a goal's phase: Succeeded is Ready, Failed and Cancelled are Stalled (with
    the reason they ended), anything else is Reconciling. A live goal's reason is its phase: the
    pod watch and dispatch write the same phase with different reasons, and must not rewrite
    each other's conditions. Ready's message (the MESSAGE column of `kubectl get goals`) is
    blank for a goal that runs or succeeded: only the others have something to say."""
    if phase == Phase.SUCCEEDED.value:
        return summarize(conditions, True, reason, "", generation)
    if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
        return summarize(conditions, False, reason, message, generation, stalled=True)
    return summarize(conditions, False, phase, message, generation,
                     ready_message="" if phase == Phase.RUNNING.value else None)
