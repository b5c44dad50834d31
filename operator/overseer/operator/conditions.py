"""Conditions as the Kubernetes API conventions describe them."""

from __future__ import annotations

from typing import Any

from overseer.kube import now_iso


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool | str, reason: str,
                  message: str = "", generation: int | None = None) -> list[dict[str, Any]]:
    """A new conditions list with type_ set; lastTransitionTime moves only when status changes."""
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
