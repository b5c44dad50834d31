"""Capability reconciliation: validate the input schema and the requires graph (Ready only once
all it requires is Ready); for an MCP server, show the tools it lists."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import jsonschema

from overseer.api import Capability
from overseer.api.capability import with_requirements

from . import dispatch
from .conditions import condition, same_conditions, set_condition, summarize
from .mcp_probe import Prober, offered_names, tools_condition
from .runtime import Key, Runtime, capability_path


def validate(cap: Capability, exists: Callable[[str], bool], requires_of: Callable[[str], list[str]],
             unready: Callable[[str], str | None] = lambda _: None) -> tuple[bool, str, str]:
    """(ready, reason, message) for a capability, given how to look up the others: whether one
    exists, what it requires, and why it is not Ready (None when it is)."""
    try:
        jsonschema.validators.validator_for(cap.spec.input_schema).check_schema(cap.spec.input_schema)
    except jsonschema.SchemaError as e:
        return False, "InvalidInputSchema", f"spec.inputSchema is not a valid JSON Schema: {e.message}"
    missing = [r for r in cap.spec.requires if not exists(r)]
    if missing:
        return False, "MissingRequirement", (f"spec.requires names {', '.join(missing)}, which do not exist in "
                                              f"namespace {cap.namespace}")
    cycle = dispatch.find_cycle(cap.name, lambda n: cap.spec.requires if n == cap.name else requires_of(n))
    if cycle:
        return False, "RequirementCycle", "spec.requires forms a cycle: " + dispatch.describe_cycle(cycle)
    waiting = [(r, why) for r in cap.spec.requires if (why := unready(r)) is not None]
    if waiting:
        return False, "RequirementNotReady", "spec.requires names capabilities that are not Ready: " + "; ".join(
            f"{r} ({why})" for r, why in waiting)
    return True, "Valid", "input schema and requirements are valid"


def needed(rt: Runtime, namespace: str, names: list[str]) -> dict[str, tuple[list[str], dict[str, Any] | None]]:
    """Every capability the named ones need through `requires`, transitively, as the store has
    them: the chain that brings each in, and the object (None when it does not exist)."""
    def requires_of(name: str) -> list[str] | None:
        raw = rt.one("capabilities", (namespace, name))
        return None if raw is None else list((raw.get("spec") or {}).get("requires") or [])

    return {n: (chain, rt.one("capabilities", (namespace, n))) for n, chain in with_requirements(names, requires_of).items()}


def not_ready_reason(raw: dict[str, Any] | None) -> str | None:
    """Why a capability object is not usable (its Ready condition's reason), or None when it is Ready."""
    if raw is None:
        return "NotFound"
    ready = condition((raw.get("status") or {}).get("conditions") or [], "Ready")
    if ready is None:
        return "NotValidatedYet"
    return None if ready.get("status") == "True" else str(ready.get("reason") or "NotReady")


P50_WINDOW = 100
"""Most recent calls the p50 latency is taken over."""


def call_stats(name: str, goals: list[dict[str, Any]]) -> dict[str, int]:
    """calls, failures and latencyP50Ms of a Capability, summed up from what agents report in
    their goals' status.capabilityCalls ({} when no goal has called it). The p50 covers the most
    recent P50_WINDOW calls, goals ordered by their last heartbeat."""
    calls = failures = 0
    recent: list[tuple[str, list[int]]] = []
    for goal in goals:
        status = goal.get("status") or {}
        for entry in status.get("capabilityCalls") or []:
            if entry.get("name") == name:
                calls += int(entry.get("calls") or 0)
                failures += int(entry.get("failures") or 0)
                recent.append((str(status.get("heartbeat") or ""), [int(ms) for ms in entry.get("recentMs") or []]))
    if not calls:
        return {}
    window = [ms for _, samples in sorted(recent, key=lambda r: r[0]) for ms in samples][-P50_WINDOW:]
    out = {"calls": calls, "failures": failures}
    if window:
        out["latencyP50Ms"] = int(statistics.median_low(window))
    return out


# Only a change to a spec clears these; a missing requirement may still be created.
SPEC_ERRORS = {"InvalidInputSchema", "RequirementCycle"}


class CapabilityReconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.prober = Prober(rt)

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        raw = self.rt.one("capabilities", key)
        if raw is None:
            self.prober.forget(key)
            return None
        cap = Capability.model_validate(raw)
        ready, reason, message = validate(
            cap,
            exists=lambda n: self.rt.one("capabilities", (ns, n)) is not None,
            requires_of=lambda n: ((self.rt.one("capabilities", (ns, n)) or {}).get("spec") or {}).get("requires") or [],
            unready=lambda n: not_ready_reason(self.rt.one("capabilities", (ns, n))),
        )
        status = raw.get("status") or {}
        conds = summarize(list(status.get("conditions") or []), ready, reason, message, cap.generation,
                          stalled=reason in SPEC_ERRORS)
        used_by = sorted(a["metadata"]["name"] for a in self.rt.by("agents", "namespace", ns)
                         if name in needed(self.rt, ns, list((a.get("spec") or {}).get("capabilities") or [])))
        changes: dict[str, Any] = {"observedGeneration": cap.generation, "usedBy": used_by,
                                   **call_stats(name, self.rt.by("goals", "namespace", ns))}
        requeue = None
        if cap.spec.mcp is not None:
            probe = self.prober.result(key, cap)
            found, why, text = tools_condition(cap, probe)
            conds = set_condition(conds, "ToolsDiscovered", found, why, text, cap.generation)
            if probe is not None and probe.tools is not None:
                changes["tools"] = offered_names(cap, probe.tools)
                changes["toolCount"] = len(changes["tools"])
            elif probe is not None:
                requeue = self.rt.settings.mcp_probe_retry_seconds
        else:
            conds = [c for c in conds if c.get("type") != "ToolsDiscovered"]
        old_found = condition(status.get("conditions") or [], "ToolsDiscovered")
        new_found = condition(conds, "ToolsDiscovered")
        if new_found is not None and new_found["status"] == "False" and (
                old_found is None or old_found.get("reason") != new_found["reason"]):
            self.rt.events.record(raw, "Warning", new_found["reason"], new_found["message"])
        if not same_conditions(conds, status.get("conditions") or []):
            changes["conditions"] = conds
            if not ready:
                self.rt.events.record(raw, "Warning", reason, message)
        await self.rt.patch_status(capability_path(ns, name, "status"), raw, changes)
        return requeue
