"""Self-modification: the agent proposes a lesson for its own prompt or a new script tool; a
person approves it like any high-risk call; the operator stores it in the Agent's
modifications ConfigMap; later goals of the agent load it from there (`load_approved`).

A proposal is checked before anyone is asked, so a person only ever sees proposals that can
work: a script tool must parse, declare a valid JSON Schema, use a free name, and stay off the
network unless the agent may use it (see `network_uses`).
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


from overseer import modifications
from overseer.kube import ApiError, Kube, path

from .base import Assessment, Tool, ToolContext, ToolError, ToolRegistry, ToolResult, cap_output, shorten
from .shell import run_process

logger = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 60.0
PROPOSAL_TOOLS = ("propose_lesson", "propose_script_tool")

# ---- the network rule ------------------------------------------------------------------------
#
# A script tool runs in the goal's pod with the pod's network. The agent's NetworkPolicy opens
# DNS, the model API (public addresses on 443: the whole internet, for practical purposes) and
# what the agent's Capabilities declare as egress. So the NetworkPolicy alone would let a script
# post the workspace anywhere on 443. A Capability with egress is the sign that the people who
# run this agent meant it to talk to the network; without one, script tools that use the
# network are refused before anyone is asked. The check reads the code, it does not sandbox
# it: code that hides what it imports (exec, __import__, importlib) is refused too, and the
# person who approves sees the whole script.

NETWORK_MODULES = frozenset({
    "socket", "socketserver", "ssl", "urllib", "urllib3", "http", "requests", "aiohttp", "httpx", "ftplib",
    "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "xmlrpc", "websocket", "websockets", "paramiko",
    "pycurl", "grpc", "boto3", "botocore", "dns", "multiprocessing.connection", "asyncssh", "twisted",
    "tornado", "webbrowser",
})
NETWORK_CALLS = frozenset({
    "open_connection", "open_unix_connection", "create_connection", "create_datagram_endpoint", "start_server",
    "create_server", "sock_connect", "getaddrinfo",
})
HIDDEN_CODE_MODULES = frozenset({"importlib", "ctypes", "cffi", "runpy"})
HIDDEN_CODE_CALLS = frozenset({"__import__", "exec", "eval", "compile"})
PROCESS_MODULES = frozenset({"subprocess", "pty"})
PROCESS_CALLS = frozenset({
    "system", "popen", "posix_spawn", "posix_spawnp", "create_subprocess_exec", "create_subprocess_shell",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
})
NETWORK_COMMANDS = frozenset({
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "telnet", "ftp", "pip",
    "pip3", "npm", "npx", "yarn", "apt", "apt-get", "dig", "nslookup", "ping", "aria2c", "kubectl", "gcloud",
    "aws", "az",
})
GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "submodule", "remote"})
_COMMAND_SEPARATORS = re.compile(r"[;|&\n()`]|\$\(")


def _module_hits(module: str, names: frozenset[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _commands(text: str) -> list[list[str]]:
    """The words of each command in a string that may be a shell line, e.g. "a x | b y"."""
    return [part.split() for part in _COMMAND_SEPARATORS.split(text) if part.split()]


def network_uses(tree: ast.AST) -> list[str]:
    """Why a script may reach the network (or hides what it does), one reason each; empty if
    nothing in the code says so."""
    reasons: list[str] = []
    spawns = False
    strings: list[str] = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            spawns |= any(alias.name in PROCESS_CALLS for alias in node.names)
            reasons += [f"imports {alias.name} from {node.module}" for alias in node.names
                        if alias.name in NETWORK_CALLS]
        for module in modules:
            if _module_hits(module, NETWORK_MODULES):
                reasons.append(f"imports {module}")
            elif _module_hits(module, HIDDEN_CODE_MODULES):
                reasons.append(f"imports {module}, which can load code the check cannot see")
            spawns |= _module_hits(module, PROCESS_MODULES)
        if isinstance(node, ast.Attribute):
            if node.attr in NETWORK_CALLS:
                reasons.append(f"uses .{node.attr}")
            elif node.attr == "__import__":
                reasons.append("uses __import__(), which can load code the check cannot see")
            spawns |= node.attr in PROCESS_CALLS
        elif isinstance(node, ast.Name) and node.id in HIDDEN_CODE_CALLS:
            reasons.append(f"uses {node.id}(), which can run code the check cannot see")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    if spawns:
        # argv may be a list of constants (["git", "clone", url]): git's subcommand is looked for
        # among all the script's words.
        every_word = {word for text in strings for word in text.split()}
        for text in strings:
            for words in _commands(text):
                program = os.path.basename(words[0])
                if program in NETWORK_COMMANDS:
                    reasons.append(f"runs {' '.join(words[:2])!r}")
                elif program == "git" and GIT_NETWORK & every_word:
                    reasons.append(f"runs git {' or '.join(sorted(GIT_NETWORK & every_word))}")
    return list(dict.fromkeys(reasons))


def check_script_tool(name: Any, description: Any, input_schema: Any, script: Any, *, taken: Iterable[str],
                      network_allowed: bool) -> list[str]:
    """What keeps a proposed script tool from being asked for; empty when it may be."""
    problems: list[str] = []
    if not isinstance(name, str) or not modifications.TOOL_NAME.match(name):
        problems.append(f"name {name!r} is not a valid tool name (letters, digits, _ and -, at most 64)")
    elif name.lower() in {t.lower() for t in taken}:
        problems.append(f"name {name!r} is already taken by a tool of this agent; choose another")
    if not isinstance(description, str) or not description.strip():
        problems.append("description is empty")
    elif len(description) > modifications.MAX_DESCRIPTION:
        problems.append(f"description is longer than {modifications.MAX_DESCRIPTION} characters")
    if not isinstance(input_schema, dict) or input_schema.get("type") != "object":
        problems.append('input_schema must be a JSON Schema object with "type": "object"')
    else:
        import jsonschema  # a proposal's check only: a goal pod's start does without it

        cls = jsonschema.validators.validator_for(input_schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(input_schema)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            problems.append(f"input_schema is not a valid JSON Schema{' at ' + where if where else ''}: {e.message}")
    if not isinstance(script, str) or not script.strip():
        problems.append("script is empty")
        return problems
    if len(script) > modifications.MAX_SCRIPT:
        problems.append(f"script is longer than {modifications.MAX_SCRIPT} characters")
    try:
        tree = ast.parse(script, filename=f"{name}.py")
    except SyntaxError as e:
        problems.append(f"script does not parse: line {e.lineno}: {e.msg}")
        return problems
    if not network_allowed:
        uses = network_uses(tree)
        if uses:
            problems.append("script may use the network (" + "; ".join(uses) + "), and this agent has no "
                            "Capability with egress; script tools of this agent must work offline")
    return problems


# ---- proposing --------------------------------------------------------------------------------

Confirm = Callable[[str], Awaitable[bool | None]]


class _Proposal(Tool):
    """A self-modification proposal: always waits for a person, as kind selfModification."""

    risk = "high"

    def __init__(self, goal_uid: str, agent: str, confirm: Confirm) -> None:
        self.goal_uid = goal_uid
        self.agent = agent
        self.confirm = confirm

    def proposal(self, input: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def problems(self, input: Mapping[str, Any]) -> list[str]:
        return []

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        problems = self.problems(input)
        if problems:
            return Assessment("low", "invalid proposal, refused without asking: " + "; ".join(problems))
        return Assessment("high", "a change to the agent itself waits for a person")

    def approval_request(self, input: Mapping[str, Any]) -> dict[str, Any]:
        """The request the loop writes to status.pendingApprovals instead of a toolCall one."""
        detail = modifications.detail_of(self.proposal(input))
        return {"id": modifications.proposal_id(detail, self.goal_uid), "kind": modifications.KIND,
                "summary": shorten(self.summarize(input), 300), "detail": detail}

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        problems = self.problems(input)
        if problems:
            raise ToolError("Proposal refused: " + "; ".join(problems))
        modification_id = self.approval_request(input)["id"]
        stored = await self.confirm(modification_id)
        if stored is False:
            return ToolResult.error(
                f"A person approved {modification_id}, but the operator did not store it (see the events of the "
                f"goal); it will not apply to later goals.", summary=f"{modification_id} not stored")
        return ToolResult(
            f"Approved{' and stored' if stored else ''} as modification {modification_id}. It applies from this "
            f"agent's next goal on, not to this one. A person can revert it with: kubectl annotate "
            f"agent/{self.agent} {modifications.REVERT}={modification_id}",
            summary=f"{self.name}: {modification_id} approved")


class ProposeLesson(_Proposal):
    name = "propose_lesson"
    description = (
        "Propose a lesson for your own system prompt in this agent's later goals: one short, general instruction "
        "learned from this goal that would have saved time or avoided a mistake (e.g. \"Run the linter before the "
        "tests; CI fails on lint first\"). A person must approve it before it is kept; it does not change this goal.")
    input_schema = {
        "type": "object",
        "properties": {"lesson": {"type": "string", "minLength": 1, "maxLength": modifications.MAX_LESSON,
                                  "description": "The lesson, as an instruction to yourself."}},
        "required": ["lesson"], "additionalProperties": False,
    }

    def proposal(self, input: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": modifications.LESSON, "lesson": input["lesson"].strip()}

    def problems(self, input: Mapping[str, Any]) -> list[str]:
        return [] if str(input.get("lesson", "")).strip() else ["the lesson is empty"]

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"new lesson for agent {self.agent}: {input.get('lesson', '')}"


class ProposeScriptTool(_Proposal):
    name = "propose_script_tool"
    description = (
        "Propose a new tool for this agent's later goals, written as a Python script: it reads the call's input "
        "as JSON on stdin and prints its result on stdout (a non-zero exit marks an error). It runs as "
        f"`python3 <script>` in the goal's workspace, for at most {SCRIPT_TIMEOUT:.0f}s. Use the standard "
        "library. Scripts that use the network are refused unless this agent has a Capability with egress. "
        "A person must approve the tool before it is kept; it is not available in this goal.")
    input_schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Tool name: letters, digits, _ and -; not an existing tool."},
            "description": {"type": "string", "description": "What the tool does, for the model that will call it."},
            "input_schema": {"type": "object", "description": "JSON Schema (type object) of the tool's input."},
            "script": {"type": "string", "description": "The Python script."},
            "language": {"type": "string", "enum": ["python"]},
        },
        "required": ["name", "description", "input_schema", "script"], "additionalProperties": False,
    }

    def __init__(self, goal_uid: str, agent: str, confirm: Confirm, *, taken: Callable[[], Iterable[str]],
                 network_allowed: bool) -> None:
        super().__init__(goal_uid, agent, confirm)
        self.taken = taken
        self.network_allowed = network_allowed

    def proposal(self, input: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": modifications.SCRIPT_TOOL, "tool": {
            "name": input["name"], "description": input["description"].strip(), "inputSchema": input["input_schema"],
            "language": "python", "script": input["script"]}}

    def problems(self, input: Mapping[str, Any]) -> list[str]:
        return check_script_tool(input.get("name"), input.get("description"), input.get("input_schema"),
                                 input.get("script"), taken=self.taken(), network_allowed=self.network_allowed)

    def summarize(self, input: Mapping[str, Any]) -> str:
        return f"new script tool {input.get('name')} for agent {self.agent}: {input.get('description', '')}"


# ---- using approved modifications -------------------------------------------------------------


class ScriptTool(Tool):
    """An approved script tool: `python3 <script>` in the workspace, the input as JSON on stdin."""

    risk = "medium"

    def __init__(self, modification_id: str, name: str, description: str, input_schema: dict[str, Any],
                 script: str, timeout: float = SCRIPT_TIMEOUT) -> None:
        self.modification_id = modification_id
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.script = script
        self.timeout = timeout

    def assess(self, input: Mapping[str, Any], ctx: ToolContext) -> Assessment:
        return Assessment("medium", f"approved script tool {self.name} ({self.modification_id}) runs in the workspace")

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        # The approved text itself on the command line, never a file: what runs is what was
        # approved, whatever the agent did to its files since (and the tools container, where
        # it runs, shares no folder with the agent but the workspace).
        outcome = await run_process(["python3", "-c", self.script], cwd=ctx.workspace, env=ctx.env,
                                    timeout=self.timeout, output_limit=ctx.output_limit,
                                    input=json.dumps(dict(input)).encode(), merge_stderr=False,
                                    sandbox=ctx.tools_socket, record=ctx.record)
        if outcome.timed_out:
            return ToolResult.error(f"{self.name} did not finish within {self.timeout:.0f}s and was stopped",
                                    summary=f"{self.name}: timed out")
        text, code = outcome.output, outcome.exit_code
        if code != 0:
            text = f"exit code {code}\n{text}" + (f"\n--- stderr\n{outcome.errors}" if outcome.errors else "")
        return ToolResult(cap_output(text, ctx.output_limit) or "(no output)", is_error=code != 0,
                          summary=f"{self.name}: exit {code}")


@dataclass
class Approved:
    """An agent's active modifications, as its goal pods use them."""

    lessons: list[str] = field(default_factory=list)
    tools: list[ScriptTool] = field(default_factory=list)


def approved_from(data: dict[str, str] | None) -> Approved:
    """Lessons and script tools from the data of the modifications ConfigMap; entries that no
    longer check out are skipped with a warning."""
    approved = Approved()
    for rec in modifications.active(data):
        if rec["kind"] == modifications.LESSON and isinstance(rec.get("lesson"), str):
            approved.lessons.append(rec["lesson"])
            continue
        tool = rec.get("tool") or {}
        try:
            modifications.parse_proposal(json.dumps({"kind": modifications.SCRIPT_TOOL, "tool": tool}))
        except ValueError as e:
            logger.warning("modification %s skipped: %s", rec["id"], e)
            continue
        approved.tools.append(ScriptTool(rec["id"], tool["name"], tool["description"], tool["inputSchema"],
                                         tool["script"]))
    return approved


async def load_approved(kube: Kube, namespace: str, agent: str) -> Approved:
    """The agent's active modifications from its ConfigMap (none if it does not exist yet)."""
    url = path("v1", "configmaps", namespace, modifications.configmap_name(agent))
    try:
        cm = await kube.get(url)
    except ApiError as e:  # e.g. a Role not yet updated: work without them rather than fail the goal
        logger.warning("modifications of agent %s/%s not loaded: %s", namespace, agent, e)
        return Approved()
    return approved_from((cm or {}).get("data"))


def register_approved(registry: ToolRegistry, tools: Iterable[ScriptTool]) -> None:
    """Add approved script tools; one whose name a built-in or Capability tool holds by now is
    left out (the built-in keeps its name), as is one the registry refuses."""
    for tool in tools:
        if tool.name in registry:
            logger.warning("script tool %s (%s) left out: a tool of that name exists", tool.name, tool.modification_id)
            continue
        try:
            registry.register(tool)
        except ValueError as e:
            logger.warning("script tool %s (%s) left out: %s", tool.name, tool.modification_id, e)


def confirmer(kube: Kube, namespace: str, agent: str) -> Confirm:
    """Whether the operator has stored a modification (None when the ConfigMap cannot be read)."""
    url = path("v1", "configmaps", namespace, modifications.configmap_name(agent))

    async def stored(modification_id: str) -> bool | None:
        try:
            cm = await kube.get(url)
        except ApiError as e:
            logger.warning("could not read %s: %s", url, e)
            return None
        return modification_id in ((cm or {}).get("data") or {})

    return stored
