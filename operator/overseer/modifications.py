"""Self-modifications of an Agent, shared by the operator and the agent runtime.

An agent proposes a lesson for its prompt or a script tool; the proposal waits in the Goal's
`status.pendingApprovals` (kind selfModification, the proposal as JSON in `detail`) until a
person runs `kubectl annotate goal/NAME overseer.dev/approve=ID`. The operator then stores it in
the Agent's ConfigMap `overseer-agent-NAME-modifications`, one key per modification id, and
never in the Agent's spec, so GitOps sees no drift. Later goals of the agent read that
ConfigMap. `kubectl annotate agent/NAME overseer.dev/revert=ID` marks one reverted (it is kept
for the record).

The id commits to the proposal: it ends in a digest of the goal's uid and the exact `detail`,
so a request rewritten after a person read it no longer matches the id they approved.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from typing import Any

from overseer.api import GROUP

KIND = "selfModification"
REVERT = f"{GROUP}/revert"
LESSON, SCRIPT_TOOL = "lesson", "scriptTool"

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what the Messages API accepts as a tool name
MAX_LESSON = 2000
MAX_DESCRIPTION = 1024
MAX_SCRIPT = 64 * 1024  # a ConfigMap holds 1 MiB in all


def configmap_name(agent: str) -> str:
    """The ConfigMap holding an agent's approved modifications."""
    return f"overseer-agent-{agent}-modifications"


def detail_of(proposal: dict[str, Any]) -> str:
    """The proposal as the approval request's `detail`: indented JSON, stable key order."""
    return json.dumps(proposal, indent=2, sort_keys=True, ensure_ascii=False)


def proposal_id(detail: str, goal_uid: str) -> str:
    """The approval (and modification) id of a request: `lesson-<digest>` or `tool-NAME-<digest>`."""
    digest = hashlib.sha256(f"{goal_uid}\n{detail}".encode()).hexdigest()[:16]
    proposal = json.loads(detail)
    if proposal.get("kind") == SCRIPT_TOOL:
        return f"tool-{proposal['tool']['name']}-{digest}"
    return f"lesson-{digest}"


def parse_proposal(detail: str | None) -> dict[str, Any]:
    """The proposal in a request's detail, checked for shape; ValueError says what is wrong."""
    try:
        proposal = json.loads(detail or "")
    except ValueError as e:
        raise ValueError(f"detail is not JSON: {e}") from None
    if not isinstance(proposal, dict):
        raise ValueError("detail is not a JSON object")
    kind = proposal.get("kind")
    if kind == LESSON:
        lesson = proposal.get("lesson")
        if not isinstance(lesson, str) or not lesson.strip() or len(lesson) > MAX_LESSON:
            raise ValueError(f"lesson must be a non-empty string of at most {MAX_LESSON} characters")
        return proposal
    if kind != SCRIPT_TOOL:
        raise ValueError(f"kind must be {LESSON} or {SCRIPT_TOOL}, not {kind!r}")
    tool = proposal.get("tool")
    if not isinstance(tool, dict):
        raise ValueError("tool must be an object")
    if not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
        raise ValueError(f"tool.name must match {TOOL_NAME.pattern}")
    description = tool.get("description")
    if not isinstance(description, str) or not description.strip() or len(description) > MAX_DESCRIPTION:
        raise ValueError(f"tool.description must be a non-empty string of at most {MAX_DESCRIPTION} characters")
    schema = tool.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ValueError('tool.inputSchema must be a JSON Schema with "type": "object"')
    if tool.get("language", "python") != "python":
        raise ValueError("tool.language must be python")
    script = tool.get("script")
    if not isinstance(script, str) or not script.strip() or len(script) > MAX_SCRIPT:
        raise ValueError(f"tool.script must be a non-empty string of at most {MAX_SCRIPT} characters")
    try:
        ast.parse(script, filename=f"{tool['name']}.py")
    except SyntaxError as e:
        raise ValueError(f"tool.script does not parse: line {e.lineno}: {e.msg}") from None
    return proposal


def record(modification_id: str, proposal: dict[str, Any], goal: str, approved_by: str,
           approved_at: str) -> dict[str, Any]:
    """What the ConfigMap holds under the modification's id."""
    body = {"lesson": proposal["lesson"]} if proposal["kind"] == LESSON else {"tool": proposal["tool"]}
    return {"id": modification_id, "kind": proposal["kind"], **body, "goal": goal,
            "approvedBy": approved_by, "approvedAt": approved_at, "reverted": False}


def records(data: dict[str, str] | None) -> list[dict[str, Any]]:
    """The records of a ConfigMap's data, oldest approval first; unreadable keys are skipped."""
    out = []
    for key, text in (data or {}).items():
        try:
            rec = json.loads(text)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("kind") in (LESSON, SCRIPT_TOOL):
            out.append({**rec, "id": key})
    return sorted(out, key=lambda r: (str(r.get("approvedAt", "")), r["id"]))


def active(data: dict[str, str] | None) -> list[dict[str, Any]]:
    """The records later goals use: those not reverted."""
    return [r for r in records(data) if not r.get("reverted")]


def revert_ids(annotations: dict[str, str] | None) -> list[str]:
    """Ids named by the revert annotation (one, or several separated by commas)."""
    value = (annotations or {}).get(REVERT, "")
    return [i.strip() for i in value.split(",") if i.strip()]
