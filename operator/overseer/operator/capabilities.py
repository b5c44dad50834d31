"""Capability reconciliation: validate the input schema and the requires graph."""

from __future__ import annotations

from collections.abc import Callable

import jsonschema

from overseer.api import Capability

from . import dispatch
from .conditions import same_conditions, summarize
from .runtime import Key, Runtime, capability_path


def validate(cap: Capability, exists: Callable[[str], bool],
             requires_of: Callable[[str], list[str]]) -> tuple[bool, str, str]:
    """(ready, reason, message) for a capability, given how to look up the others."""
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
    return True, "Valid", "input schema and requirements are valid"


# Only a change to a spec clears these; a missing requirement may still be created.
SPEC_ERRORS = {"InvalidInputSchema", "RequirementCycle"}


class CapabilityReconciler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def reconcile(self, key: Key) -> float | None:
        ns, name = key
        raw = self.rt.one("capabilities", key)
        if raw is None:
            return None
        cap = Capability.model_validate(raw)
        ready, reason, message = validate(
            cap,
            exists=lambda n: self.rt.one("capabilities", (ns, n)) is not None,
            requires_of=lambda n: ((self.rt.one("capabilities", (ns, n)) or {}).get("spec") or {}).get("requires") or [],
        )
        status = raw.get("status") or {}
        conds = summarize(list(status.get("conditions") or []), ready, reason, message, cap.generation,
                          stalled=reason in SPEC_ERRORS)
        used_by = sorted(a["metadata"]["name"] for a in self.rt.by("agents", "namespace", ns)
                         if name in ((a.get("spec") or {}).get("capabilities") or []))
        changes = {"observedGeneration": cap.generation, "usedBy": used_by}
        if not same_conditions(conds, status.get("conditions") or []):
            changes["conditions"] = conds
            if not ready:
                self.rt.events.record(raw, "Warning", reason, message)
        await self.rt.patch_status(capability_path(ns, name, "status"), raw, changes)
        return None
