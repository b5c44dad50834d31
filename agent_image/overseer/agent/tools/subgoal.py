"""`spawn_subgoal`: hand a part of the goal to a sub-goal, a Goal object of its own, and wait
for its outcome.

A sub-goal is a Goal like any other: the operator queues and dispatches it, it gets its own
pod, and its tool calls wait for approval under the same policy as its parent's. What makes it
a sub-goal:

- `spec.parent` names the goal that spawned it, the label `overseer.dev/parent` lets
  `kubectl get goals -l overseer.dev/parent=NAME` list them, and an owner reference to the
  parent makes deleting the parent delete its sub-goals.
- Its name is the parent's plus a hash of the agent and description, so a parent resumed from
  a checkpoint that runs the same call again finds the sub-goal it created before.
- Nesting is limited: a goal `max_depth` levels below a top-level goal spawns nothing.
- Its token budget is carved from the parent's: while it runs the parent is charged what was
  carved, once it has ended what it used, and the parent's own budget shrinks accordingly
  (`TokenLedger`). The parent keeps a reserve to read the result and finish.

The API server and the operator hold every sub-goal to these rules whoever writes it
(docs/security.md): a parent of the agent's own, its own Agent or one of its spec.delegates, no
weaker approval policy, a budget within the parent's, no steering annotation, and at most the
Agent's spec.maxSubgoalsPerGoal unfinished at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from overseer.api import API_VERSION, GROUP, parse_duration
from overseer.kube import ApiError, Kube, path

from .base import Tool, ToolContext, ToolError, ToolResult, shorten

logger = logging.getLogger(__name__)

LABEL_PARENT = f"{GROUP}/parent"
MAX_NAME = 63                     # goal names become pod names and label values
HASH_CHARS = 8
MIN_SUBGOAL_TOKENS = 2_000
"""Fewer tokens than this buy a sub-goal no useful model call."""
PARENT_RESERVE_TOKENS = 2_000
"""Tokens a parent keeps for itself to read the sub-goal's result and finish."""
UNLIMITED_PARENT_TOKENS = 100_000
"""A sub-goal's budget when its parent has no token limit and none was asked: every sub-goal an
agent creates carries one (admission refuses an unlimited one)."""
DEFAULT_WAIT_SECONDS = 30 * 60
TERMINAL = ("Succeeded", "Failed", "Cancelled")
RESULT_LIMIT = 8_000              # characters of the sub-goal's result shown to the model


class BudgetRefused(ToolError):
    """The parent has too few tokens left to give a sub-goal any."""


class DepthExceeded(ToolError):
    """The parent is already as deep as sub-goals may nest."""


# ---- pure parts -------------------------------------------------------------------------------


def child_name(parent: str, description: str, agent: str) -> str:
    """The sub-goal's name: the parent's (cut to fit) plus a short hash of agent and description,
    at most 63 characters. The same call from the same parent always gives the same name."""
    digest = hashlib.sha256(f"{agent}\n{description.strip()}".encode()).hexdigest()[:HASH_CHARS]
    stem = parent[: MAX_NAME - HASH_CHARS - 1].rstrip("-.")
    return f"{stem}-{digest}"


def depth_refusal(ancestors: list[str], max_depth: int, goal: str) -> str | None:
    """Why `goal` (with `ancestors`, nearest first) may not spawn a sub-goal, or None if it may.
    A top-level goal is at depth 0; its sub-goals are at depth 1."""
    depth = len(ancestors) + 1
    if depth <= max_depth:
        return None
    if max_depth == 0:
        return "Sub-goals are turned off for this agent (max sub-goal depth 0). Do the work in this goal."
    chain = " <- ".join([goal, *ancestors])
    return (f"Goal {goal} is at depth {len(ancestors)} ({chain}); a sub-goal would be at depth {depth}, beyond the "
            f"limit of {max_depth}. Do this part of the work in this goal instead.")


async def ancestors(fetch: Callable[[str], Awaitable[Mapping[str, Any] | None]], goal: str, parent: str | None,
                    limit: int) -> list[str]:
    """Names of the parent, grandparent, ... of `goal`, nearest first, following `spec.parent`
    through `fetch(name)`; at most `limit` + 1 of them (enough to tell the depth is over
    `limit`). A parent that no longer exists ends the chain; a cycle counts as too deep."""
    names: list[str] = []
    seen = {goal}
    while parent and len(names) <= limit:
        names.append(parent)
        if parent in seen:
            names.extend([parent] * (limit + 1 - len(names)))
            break
        seen.add(parent)
        obj = await fetch(parent)
        parent = ((obj or {}).get("spec") or {}).get("parent")
    return names


def carve_tokens(requested: int | None, remaining: int | None, minimum: int = MIN_SUBGOAL_TOKENS,
                 reserve: int = PARENT_RESERVE_TOKENS) -> int:
    """The token budget of a new sub-goal: what was asked (by default half of what is left),
    capped so the parent keeps `reserve`; what was asked or UNLIMITED_PARENT_TOKENS when the parent
    has no token limit. Raises BudgetRefused when less than `minimum` could be given."""
    if remaining is None:
        return requested or UNLIMITED_PARENT_TOKENS
    available = remaining - reserve
    if available < minimum:
        raise BudgetRefused(
            f"This goal has {max(remaining, 0)} tokens of its budget left; a sub-goal needs at least {minimum} and "
            f"this goal keeps {reserve} to finish. Do the work here, or finish with what you have.")
    wanted = requested if requested is not None else max(remaining // 2, minimum)
    return min(wanted, available)


def charge_of(child: Mapping[str, Any]) -> int:
    """What a sub-goal costs its parent: the tokens carved for it while it runs (or what it
    used, if more), what it used once it has ended."""
    status = child.get("status") or {}
    used = int((status.get("tokens") or {}).get("total") or 0)
    if status.get("phase") in TERMINAL:
        return used
    carved = ((child.get("spec") or {}).get("budget") or {}).get("maxTokensPerGoal")
    return max(int(carved or 0), used)


def is_terminal(child: Mapping[str, Any]) -> bool:
    return (child.get("status") or {}).get("phase") in TERMINAL


@dataclass(frozen=True)
class ParentGoal:
    """The goal that spawns sub-goals: the one this agent process works on."""

    namespace: str
    name: str
    uid: str
    parent: str | None = None
    """Its own parent, when it is a sub-goal itself."""
    priority: int = 0
    approval_policy: Mapping[str, Any] | None = None


def render_subgoal(parent: ParentGoal, name: str, description: str, agent: str, tokens: int) -> dict[str, Any]:
    """The sub-goal's Goal object."""
    labels = {LABEL_PARENT: parent.name} if len(parent.name) <= MAX_NAME else {}
    spec: dict[str, Any] = {"description": description, "agentRef": {"name": agent}, "parent": parent.name,
                            "priority": parent.priority, "budget": {"maxTokensPerGoal": tokens}}
    if parent.approval_policy:
        # A sub-goal's calls wait for approval as its parent's would: spawning is no way around a policy.
        spec["approvalPolicy"] = dict(parent.approval_policy)
    metadata: dict[str, Any] = {"name": name, "namespace": parent.namespace, "labels": labels}
    if parent.uid:
        metadata["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": "Goal", "name": parent.name,
                                        "uid": parent.uid}]
    return {"apiVersion": API_VERSION, "kind": "Goal", "metadata": metadata, "spec": spec}


def report(child: Mapping[str, Any]) -> ToolResult:
    """A finished sub-goal as the tool's result: an error unless it succeeded."""
    meta, spec, status = child.get("metadata") or {}, child.get("spec") or {}, child.get("status") or {}
    phase = status.get("phase", "Unknown")
    tokens = int((status.get("tokens") or {}).get("total") or 0)
    carved = (spec.get("budget") or {}).get("maxTokensPerGoal")
    lines = [f"Sub-goal {meta.get('name')}: {phase}",
             f"Tokens used: {tokens}" + (f" of {carved} carved from this goal" if carved else "")]
    if phase != "Succeeded":
        why = status.get("failureReason") or next(
            (c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Complete"), None)
        lines.append(f"Reason: {why or 'unknown'}" + (f" ({status['message']})" if status.get("message") else ""))
    result = status.get("result") or ""
    if len(result) > RESULT_LIMIT:
        result = result[:RESULT_LIMIT] + f"\n[... {len(result) - RESULT_LIMIT} more characters in its status.result]"
    lines.append("Result:\n" + (result or "(none reported)"))
    return ToolResult("\n".join(lines), is_error=phase != "Succeeded",
                      summary=shorten(f"sub-goal {meta.get('name')} {phase.lower()}: {result or phase}"))


# ---- the parent's budget ----------------------------------------------------------------------


class TokenBudget(Protocol):
    """The parent loop's budget; only its token limit is read and lowered here."""

    max_tokens: int | None


class TokenLedger:
    """A goal's token budget shared with its sub-goals. Each sub-goal is charged (`charge_of`),
    and the goal's own limit is its original one less all charges, so the loop stops the
    parent when parent and sub-goals together have spent the budget."""

    def __init__(self, budget: TokenBudget, used: Callable[[], int]) -> None:
        self.budget = budget
        self.limit = budget.max_tokens
        self.used = used
        self.charges: dict[str, int] = {}

    @property
    def charged(self) -> int:
        return sum(self.charges.values())

    def remaining(self) -> int | None:
        """Tokens neither the goal nor its sub-goals have used or hold; None without a limit."""
        if self.limit is None:
            return None
        return self.limit - self.charged - self.used()

    def charge(self, child: str, tokens: int) -> None:
        self.charges[child] = tokens
        if self.limit is not None:
            self.budget.max_tokens = self.limit - self.charged


# ---- the tool ---------------------------------------------------------------------------------


class SpawnSubgoal(Tool):
    name = "spawn_subgoal"
    description = (
        "Hand a self-contained part of this goal to a sub-goal: a new Goal worked on in its own pod, by this "
        "agent or another one in the namespace. Describe the task completely; the sub-goal sees nothing of this "
        "conversation. Its token budget is carved from this goal's. By default the call waits until the sub-goal "
        "has finished and returns its phase, result and tokens. With wait: false it returns at once with the "
        "sub-goal's name; call again with the same description (and agent) to wait for its result. Calling again "
        "with the same description never creates a second sub-goal."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "minLength": 1, "maxLength": 32768,
                            "description": "The task, complete and self-contained."},
            "agent": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253,
                      "description": "The Agent that works on it: this agent (when left out) or one of the Agents "
                                     "its spec.delegates names."},
            "max_tokens": {"type": "integer", "minimum": 1,
                           "description": "Token budget of the sub-goal, taken from this goal's; by default half "
                                          "of what this goal has left."},
            "wait": {"type": "boolean", "default": True,
                     "description": "Wait for the sub-goal to finish (default true)."},
            "timeout_seconds": {"type": "integer", "minimum": 1,
                                "description": "How long to wait; by default the sub-goal's timeout, or 30 minutes."},
        },
        "required": ["description"],
        "additionalProperties": False,
    }
    risk = "low"

    def __init__(self, kube: Kube, parent: ParentGoal, agent: str, ledger: TokenLedger, max_depth: int = 3,
                 min_tokens: int = MIN_SUBGOAL_TOKENS, reserve_tokens: int = PARENT_RESERVE_TOKENS) -> None:
        self.kube = kube
        self.parent = parent
        self.agent = agent
        self.ledger = ledger
        self.max_depth = max_depth
        self.min_tokens = min_tokens
        self.reserve_tokens = reserve_tokens

    def _url(self, name: str | None = None) -> str:
        return path(API_VERSION, "goals", self.parent.namespace, name)

    async def restore(self) -> None:
        """Charge the sub-goals an earlier attempt of this goal created; a failure to list them
        is logged, not fatal."""
        params = {"labelSelector": f"{LABEL_PARENT}={self.parent.name}"} if len(self.parent.name) <= MAX_NAME else None
        try:
            listing = await self.kube.request("GET", self._url(), params=params)
        except Exception as e:  # noqa: BLE001 - the ledger then starts empty, as for a new goal
            logger.warning("sub-goals of %s/%s not listed: %s", self.parent.namespace, self.parent.name, e)
            return
        for child in (listing or {}).get("items") or []:
            if self._owns(child):
                self.ledger.charge(child["metadata"]["name"], charge_of(child))

    def _owns(self, child: Mapping[str, Any]) -> bool:
        if (child.get("spec") or {}).get("parent") != self.parent.name:
            return False
        owners = (child.get("metadata") or {}).get("ownerReferences") or []
        return not self.parent.uid or any(o.get("uid") == self.parent.uid for o in owners)

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        description = str(input["description"]).strip()
        if not description:
            raise ToolError("description is empty: describe the task of the sub-goal")
        agent = str(input.get("agent") or self.agent)
        name = child_name(self.parent.name, description, agent)
        child = await self.kube.get(self._url(name))
        if child is not None and not self._owns(child):
            raise ToolError(f"Goal {self.parent.namespace}/{name} exists and is not a sub-goal of this goal; "
                            f"reword the description")
        if child is None:
            child = await self._create(name, description, agent, input.get("max_tokens"))
        self.ledger.charge(name, charge_of(child))
        if not input.get("wait", True):
            if is_terminal(child):
                return report(child)
            return ToolResult(
                f"Created sub-goal {name} (agent {agent}). It runs on its own; call spawn_subgoal with the same "
                f"description{' and agent' if agent != self.agent else ''} to wait for its result.",
                summary=f"sub-goal {name} started")
        timeout = input.get("timeout_seconds") or _timeout_of(child)
        try:
            child = await asyncio.wait_for(self._until_terminal(name, child), timeout)
        except TimeoutError:
            return ToolResult.error(
                f"Sub-goal {name} has not finished after {timeout:.0f}s; it keeps running. Call spawn_subgoal again "
                f"with the same description to wait longer, or carry on without its result.",
                summary=f"sub-goal {name} still running after {timeout:.0f}s")
        self.ledger.charge(name, charge_of(child))
        return report(child)

    async def _create(self, name: str, description: str, agent: str, requested: int | None) -> dict[str, Any]:
        chain = await ancestors(lambda n: self.kube.get(self._url(n)), self.parent.name, self.parent.parent,
                                self.max_depth)
        refusal = depth_refusal(chain, self.max_depth, self.parent.name)
        if refusal is not None:
            raise DepthExceeded(refusal)
        tokens = carve_tokens(requested, self.ledger.remaining(), self.min_tokens, self.reserve_tokens)
        body = render_subgoal(self.parent, name, description, agent, tokens)
        try:
            created = await self.kube.create(self._url(), body)
        except ApiError as e:
            raise ToolError(f"Goal {self.parent.namespace}/{name} could not be created: {e.message}") from e
        if created is None:  # created by an earlier attempt in the meantime: use that one
            created = await self.kube.get(self._url(name))
            if created is None or not self._owns(created):
                raise ToolError(f"Goal {self.parent.namespace}/{name} exists and is not a sub-goal of this goal")
        logger.info("spawned sub-goal %s/%s for agent %s with %s tokens", self.parent.namespace, name, agent, tokens)
        return created

    async def _until_terminal(self, name: str, child: dict[str, Any]) -> dict[str, Any]:
        """Follow the sub-goal with a watch until its phase is terminal; a watch that ends or
        fails is started again from a fresh read."""
        backoff = 0.5
        while not is_terminal(child):
            try:
                child = await self._watch(name, child)
                if is_terminal(child):
                    break
                fresh = await self.kube.get(self._url(name))
            except ToolError:
                raise
            except Exception as e:  # noqa: BLE001 - API and connection errors: the watch is re-established
                logger.debug("watch of sub-goal %s ended: %s", name, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            if fresh is None:
                raise ToolError(f"Sub-goal {name} was deleted before it finished")
            child, backoff = fresh, 0.5
        return child

    async def _watch(self, name: str, child: dict[str, Any]) -> dict[str, Any]:
        """The sub-goal as last seen by one watch from `child`'s resourceVersion: once terminal,
        or when the server ends the watch."""
        rv = (child.get("metadata") or {}).get("resourceVersion")
        params = {"fieldSelector": f"metadata.name={name}", **({"resourceVersion": rv} if rv else {})}
        async with contextlib.aclosing(self.kube.watch(self._url(), params)) as events:
            async for event in events:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    child = obj
                    if is_terminal(child):
                        break
                elif kind == "DELETED":
                    raise ToolError(f"Sub-goal {name} was deleted before it finished")
                elif kind == "ERROR":  # resourceVersion too old: the caller reads afresh
                    break
        return child


def _timeout_of(child: Mapping[str, Any]) -> float:
    timeout = (child.get("spec") or {}).get("timeout")
    try:
        return parse_duration(timeout).total_seconds() if timeout else DEFAULT_WAIT_SECONDS
    except ValueError:
        return DEFAULT_WAIT_SECONDS
