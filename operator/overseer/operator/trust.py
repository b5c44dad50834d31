"""What the operator believes of a Goal's status: what it wrote itself, never another writer's.

An agent reports in its own goal's status (admission confines it to its fields), and anyone
granted goals/status could write the rest. The operator acts on status.phase and
status.decisions only as it wrote them: managedFields say which field manager last changed a
field, and the decisions it recorded are also kept in memory, so that a rewrite is undone even
under the operator's own manager name while it runs. Everything else it needs (attempts, exit
codes) it reads from the goal's pods, which agents cannot write.
"""

from __future__ import annotations

import re
from typing import Any

from overseer.api import Phase

Raw = dict[str, Any]
OPERATOR_MANAGER = "overseer-operator"
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def status_writers(raw: Raw, field: str) -> set[str]:
    """The field managers that own status.<field>: whoever changed it last (more than one only
    when several applied the same value)."""
    return {entry.get("manager", "") for entry in raw.get("metadata", {}).get("managedFields") or []
            if f"f:{field}" in ((entry.get("fieldsV1") or {}).get("f:status") or {})}


def written_by_others(raw: Raw, field: str) -> set[str]:
    return status_writers(raw, field) - {OPERATOR_MANAGER}


def trusted_phase(raw: Raw) -> str | None:
    """status.phase as the operator wrote it (Pending before it wrote any); None when another
    writer changed it since."""
    if written_by_others(raw, "phase"):
        return None
    phase: str = (raw.get("status") or {}).get("phase", Phase.PENDING.value)
    return phase


def trusted_decisions(raw: Raw, remembered: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The decisions the operator recorded: those it remembers writing, else status.decisions
    unless another writer changed them (then none: the annotations give the current one back)."""
    if remembered is not None:
        return remembered
    if written_by_others(raw, "decisions"):
        return []
    return list((raw.get("status") or {}).get("decisions") or [])


def failure_reason(reported: Any, default: str) -> str:
    """The agent's failureReason as a condition reason, if it is one (it is the agent's to write,
    and a malformed one would make every status write of the goal fail)."""
    return reported if isinstance(reported, str) and len(reported) <= 64 and REASON.match(reported) else default
