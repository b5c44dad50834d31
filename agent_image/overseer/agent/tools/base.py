"""The contract between the agent loop and its tools: context, results, risk and the registry.

Risk of one call, as the approval policy (`spec.approvalPolicy.minRisk`) sees it:

- low: reads, and changes whose whole effect is in the call itself (an exact edit, a new file).
- medium: changes inside the workspace whose effect the call does not show (overwriting a
  file wholesale, a shell command that writes in the workspace).
- high: effects beyond the workspace (network, packages, privileges, the system, files
  outside the workspace), and code the classifier cannot read (runs-code) unless the Agent's
  spec.codeExecution is Allowed. With the default policy only these wait for a person.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from overseer.api.meta import RISK_ORDER as RISK_ORDER  # the one risk table, shared with the operator
from overseer.api.meta import Risk as Risk

if TYPE_CHECKING:  # jsonschema (with the metaschemas it loads) is imported at a tool's first call
    import jsonschema
    from jsonschema.exceptions import ValidationError

Level = Literal["read-only", "writes-workspace", "runs-code", "dangerous"]
CodeExecution = Literal["RequiresApproval", "Allowed"]


def risk_at_least(risk: str, threshold: str) -> bool:
    """Whether a call of this risk meets the approval policy's `minRisk`. A risk or threshold
    this table does not know counts as high: an unknown value never lets a call through."""
    highest = RISK_ORDER["high"]
    return RISK_ORDER.get(risk, highest) >= RISK_ORDER.get(threshold, highest)


@dataclass(frozen=True)
class Classification:
    """What a shell command may touch, and what in it made it so."""

    level: Level
    reason: str


@dataclass(frozen=True)
class Assessment:
    """The risk of one tool call and why; the loop compares it with the approval policy."""

    risk: Risk
    reason: str
    classification: Classification | None = None
    side_effects: bool = True
    """Whether the call may change anything but the loop's own state (its messages and TODO
    list): files, processes, other objects. The loop checkpoints around calls that may."""


@dataclass
class ToolContext:
    """Where and how tools run for one goal."""

    workspace: Path
    """The goal's workspace; every path a tool touches resolves inside it."""
    bash_timeout: float = 120
    """Seconds a shell command may run before its process group is killed."""
    output_limit: int = 30_000
    """Characters of output returned to the model per call."""
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    """Environment of subprocesses run here (without tools_socket)."""
    tools_socket: Path | None = None
    """The goal pod's tools container (shell.sandbox): where subprocesses run, with that
    container's environment, out of reach of the agent's token and credentials."""
    code_execution: CodeExecution = "RequiresApproval"
    """The Agent's spec.codeExecution: whether commands that run code are high risk or medium."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Free room for tools added later."""
    goal_uid: str = ""
    call_id: str = ""
    """The tool call being run (set per call by the loop): with goal_uid, names its record."""

    @property
    def record(self) -> Path | None:
        """Where a command of this call records its outcome (shell.journal), so a replaced pod
        resuming at this call does not run a finished command again."""
        if not (self.goal_uid and self.call_id):
            return None
        from .shell.journal import record_path

        return record_path(self.workspace, self.goal_uid, self.call_id)


@dataclass
class ToolResult:
    """What a call returns to the model (`content`) and to status and event streams (`summary`)."""

    content: str
    is_error: bool = False
    summary: str = ""
    """One line, e.g. "read src/parser.py lines 1-80"."""
    risk: Risk = "low"
    classification: Classification | None = None

    @classmethod
    def error(cls, message: str, summary: str | None = None) -> ToolResult:
        return cls(content=message, is_error=True, summary=summary or first_line(message))


class ToolError(Exception):
    """A failure the model caused and can fix; its message is returned as an error result."""


class WorkspaceError(ToolError):
    """A path that leaves the workspace."""


class Tool(ABC):
    """A tool the model may call. Subclasses set these attributes (on the class, or per
    instance for tools built from data) and implement `run`."""

    name: str
    description: str
    input_schema: dict[str, Any]
    """JSON Schema of the input; the registry validates every call against it."""
    risk: Risk = "low"
    """The risk of a call unless `assess` says otherwise."""
    side_effects: bool = True
    """Whether a call may change anything but the loop's own state, unless `assess` says otherwise."""

    def definition(self) -> dict[str, Any]:
        """The tool as the Messages API takes it in `tools=[...]`."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        """The risk of this call; by default the tool's static risk."""
        return Assessment(self.risk, f"{self.name} is a {self.risk}-risk tool", side_effects=self.side_effects)

    def summarize(self, input: Mapping[str, Any]) -> str:
        """One line describing the call before it runs, e.g. for an approval request."""
        return shorten(f"{self.name} {json.dumps(dict(input), ensure_ascii=False, sort_keys=True)}")

    @abstractmethod
    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        """Do the work; raise ToolError for failures the model should read and fix."""


class ToolRegistry:
    """The tools offered to the model, by name; runs calls without ever raising into the loop."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add a tool; a duplicate name or an invalid schema is a programming error and raises.

        A schema set per instance comes from data (a Capability, an MCP server, a script tool) and
        is checked here. One set on the tool's class is code, checked by the tests
        (tests/test_tool_registry.py): its validator is made at the tool's first call, so a goal
        pod's start does not import jsonschema, whose metaschemas cost it tens of ms of CPU."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        if "input_schema" in vars(tool):
            self._validators[tool.name] = _validator(tool)
        self._tools[tool.name] = tool

    def unregister(self, name: str) -> None:
        """Stop offering a tool (an MCP server's tool it no longer lists); unknown names are ignored."""
        self._tools.pop(name, None)
        self._validators.pop(name, None)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        """Every tool as the Messages API takes it."""
        return [tool.definition() for tool in self._tools.values()]

    def validate(self, name: str, input: Any) -> str | None:
        """None if the input fits the tool's schema, else a message naming the field."""
        if name not in self._tools:
            return self._unknown(name)
        from jsonschema.exceptions import relevance

        if name not in self._validators:
            self._validators[name] = _validator(self._tools[name])
        errors = sorted(self._validators[name].iter_errors(input), key=relevance)
        if not errors:
            return None
        problems = [_describe(error) for error in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return f"Invalid input for {name}: " + "; ".join(problems) + more

    def assess(self, name: str, input: Any, ctx: ToolContext) -> Assessment:
        """The risk of a call. Calls that will be refused (unknown tool, invalid input) are low."""
        tool = self._tools.get(name)
        if tool is None:
            return Assessment("low", f"unknown tool {name!r}; the call will be refused", side_effects=False)
        problem = self.validate(name, input)
        if problem is not None:
            return Assessment("low", f"{problem}; the call will be refused", side_effects=False)
        try:
            return tool.assess(input, ctx)
        except Exception as exc:  # noqa: BLE001 - an unassessable call is treated as the riskiest
            return Assessment("high", f"could not assess the {name} call ({type(exc).__name__}: {exc})")

    def summarize(self, name: str, input: Any) -> str:
        """One line describing a call before it runs."""
        tool = self._tools.get(name)
        if tool is None or not isinstance(input, Mapping):
            return shorten(f"{name} {input!r}")
        try:
            return tool.summarize(input)
        except Exception:  # noqa: BLE001 - a summary is cosmetic
            return shorten(f"{name} {input!r}")

    async def run(self, name: str, input: Any, ctx: ToolContext) -> ToolResult:
        """Run a call. Unknown tools, invalid input and failures come back as error results."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.error(self._unknown(name), summary=f"unknown tool {name}")
        problem = self.validate(name, input)
        if problem is not None:
            return ToolResult.error(problem, summary=f"{name}: invalid input")
        assessment = self.assess(name, input, ctx)
        try:
            result = await tool.run(input, ctx)
        except ToolError as exc:
            result = ToolResult.error(str(exc), summary=f"{name} failed: {first_line(str(exc))}")
        except Exception as exc:  # noqa: BLE001 - the loop must always get a result to send back
            message = f"{name} failed unexpectedly: {type(exc).__name__}: {exc}"
            result = ToolResult.error(message, summary=shorten(message))
        result.risk = assessment.risk
        if result.classification is None:
            result.classification = assessment.classification
        if not result.summary:
            result.summary = self.summarize(name, input)
        return result

    def _unknown(self, name: str) -> str:
        return f"Unknown tool {name!r}. Available tools: {', '.join(self._tools) or 'none'}."


def _validator(tool: Tool) -> jsonschema.protocols.Validator:
    """The validator of a tool's input; ValueError if its schema is not a valid JSON Schema."""
    import jsonschema

    cls = jsonschema.validators.validator_for(tool.input_schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(tool.input_schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"tool {tool.name}: input_schema is not a valid JSON Schema: {exc.message}") from None
    return cls(tool.input_schema)


def _describe(error: ValidationError) -> str:
    """One validation error, naming the field it is about."""
    where = _field_path(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else error.message
        field_name = f"{where}.{missing}" if where else missing
        return f"missing required field '{field_name}'"
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set((error.schema.get("properties") or {}).keys()) if isinstance(error.schema, Mapping) else set()
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        names = ", ".join(f"'{f'{where}.{k}' if where else k}'" for k in extra)
        return f"unexpected field {names}" + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
    if not where:
        return f"input: {error.message}"
    return f"field '{where}': {error.message}"


def _field_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def resolve_in_workspace(ctx: ToolContext, path: str | os.PathLike[str]) -> Path:
    """The real path of `path` (relative to the workspace, or absolute inside it).
    Raises WorkspaceError if it, or a symlink on the way, leads outside the workspace."""
    workspace = ctx.workspace.resolve()
    raw = os.fspath(path)
    if "\x00" in raw:
        raise WorkspaceError(f"path {raw!r} contains a NUL byte")
    given = Path(raw).expanduser() if raw.startswith("~") else Path(raw)
    candidate = given if given.is_absolute() else workspace / given
    lexical = Path(os.path.normpath(candidate))
    if not _within(lexical, workspace) and not _within(lexical, ctx.workspace.absolute()):
        if given.is_absolute():
            raise WorkspaceError(f"path {raw} is outside the workspace {workspace}; use a path inside it")
        raise WorkspaceError(f"path {raw} escapes the workspace {workspace}; use a path inside it")
    real = candidate.resolve()
    if not _within(real, workspace):
        raise WorkspaceError(f"path {raw} leads outside the workspace through a symlink (to {real})")
    return real


def display_path(ctx: ToolContext, path: Path) -> str:
    """A resolved path as the model should read it: relative to the workspace."""
    workspace = ctx.workspace.resolve()
    try:
        rel = path.relative_to(workspace)
    except ValueError:
        return str(path)
    return rel.as_posix() if rel.parts else "."


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def first_line(text: str) -> str:
    return shorten(text.strip().splitlines()[0] if text.strip() else "")


def shorten(text: str, width: int = 120) -> str:
    """text on one line, cut to width characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def cap_output(text: str, limit: int, hint: str = "") -> str:
    """text cut to `limit` characters (head and tail kept) with a notice of what was left out."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    omitted = len(text) - 2 * half
    notice = f"\n[... output truncated: {omitted} of {len(text)} characters omitted{hint} ...]\n"
    return text[:half] + notice + text[-half:]
