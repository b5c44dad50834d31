"""Goal: one piece of work for an agent."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .agent import Budget
from .meta import (
    ApiModel,
    Conditions,
    CustomResource,
    Duration,
    LabelSelector,
    LocalObjectReference,
    PrinterColumn,
    Risk,
)

RECENT_CALLS = 20
"""Latencies a goal keeps per Capability, for the p50 the operator shows."""


class Phase(str, Enum):
    """Readable summary of where a Goal is; conditions carry the details."""

    PENDING = "Pending"
    BLOCKED = "Blocked"
    QUEUED = "Queued"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)


class ApprovalPolicy(ApiModel):
    """Which tool calls wait for a person's approval."""

    min_risk: Risk = "high"
    """Calls at or above this risk wait for `kubectl annotate goal/NAME overseer.dev/approve=ID`. A shell
    command that runs code (python3 -c, eval, a here-document fed to a shell, ...) is high unless the
    Agent's spec.codeExecution is Allowed, then medium."""


class WorkspaceSource(ApiModel):
    """The workspace of a dependency this goal starts from."""

    goal: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """A Goal in spec.dependsOn whose Agent has spec.workspace (so its files outlive its pod)."""
    mode: Literal["Copy", "ReadOnly"] = "Copy"
    """Copy: its files are copied into this goal's workspace before the first model call (once, not on
    a retry). ReadOnly: its claim is mounted read-only at /workspace-from/GOAL and the model is told so."""


class GoalSpec(ApiModel):
    """Desired state of a Goal. Exactly one of agentRef or agentSelector names its agent."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.agentRef) != has(self.agentSelector)",
                    "message": "set exactly one of agentRef or agentSelector",
                },
                {
                    "rule": "!has(self.workspaceFrom) || (has(self.dependsOn) && self.workspaceFrom.goal in self.dependsOn)",
                    "message": "spec.workspaceFrom.goal must also be listed in spec.dependsOn: a goal starts from "
                               "the workspace of a dependency that has succeeded",
                    "fieldPath": ".workspaceFrom.goal",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.dependsOn) || !has(self.parent) || !(self.parent in self.dependsOn)",
                    "message": "a goal cannot depend on its own parent",
                    "fieldPath": ".dependsOn",
                },
            ]
        }
    )

    description: str = Field(min_length=1, max_length=32768)
    """The task in prose, as the agent should read it."""
    agent_ref: LocalObjectReference | None = None
    """The Agent (same namespace) that works on this goal."""
    agent_selector: LabelSelector | None = None
    """Pick an Agent by labels instead; the ready one with the fewest running goals wins."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Higher runs first among an agent's queued goals; ties go to the oldest."""
    depends_on: list[str] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    )
    """Names of Goals in the same namespace that must succeed before this one starts.
    Missing ones keep it Blocked; a failed one or a cycle fails it."""
    budget: Budget | None = None
    """Overrides of the agent's per-goal budget."""
    timeout: Duration | None = None
    """How long the goal may take from its first start until it fails with reason Timeout."""
    max_retries: int = Field(default=1, ge=0, le=10)
    """How many times a failed attempt (pod failed or lost) is retried, with backoff."""
    parent: str | None = Field(default=None, max_length=253)
    """The Goal that spawned this one as a sub-goal."""
    approval_policy: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    """Which tool calls wait for approval."""
    workspace_from: WorkspaceSource | None = None
    """Start from the files a dependency left in its workspace."""
    cancel: bool = False
    """Set to true to stop the goal: its pod is deleted and the phase becomes Cancelled."""


class TokenUsage(ApiModel):
    """Tokens used by a goal, by kind."""

    input: int = 0
    """Uncached input tokens."""
    output: int = 0
    """Output tokens."""
    cache_read: int = 0
    """Input tokens read from the prompt cache."""
    cache_write: int = 0
    """Input tokens written to the prompt cache."""
    total: int = 0
    """Sum of all of the above."""


class GoalCost(ApiModel):
    """What a goal cost, as the model gateway's spend ledger records it."""

    usd: float = 0
    """US dollars spent on model calls, across attempts and sub-goals (at any depth): what
    spec.budget.maxCostPerGoal counts."""
    tokens: int = 0
    """Tokens of those calls, all kinds."""
    requests: int = 0
    """Model calls priced."""
    own_usd: float = 0
    """US dollars of this goal's own attempts' calls, without its sub-goals."""


class PendingApproval(ApiModel):
    """A tool call or self-modification waiting for a person's decision."""

    id: str
    """Pass it to `kubectl annotate goal/NAME overseer.dev/approve=ID` (or deny)."""
    kind: str
    """What is asked: toolCall, selfModification, ..."""
    summary: str
    """One line describing the request."""
    detail: str | None = None
    """The command, diff or payload in full."""
    requested_at: str = Field(json_schema_extra={"format": "date-time"})
    """When the agent asked."""


class ApprovalDecision(ApiModel):
    """A person's answer to a pending approval, taken from the Goal's annotations."""

    id: str
    """The approval's id."""
    decision: Literal["approved", "denied"]
    """approved or denied."""
    decided_by: str
    """Who decided: the authenticated user the API server stamped in annotation overseer.dev/decided-by
    (e.g. system:serviceaccount:NS:NAME or alice@example.com)."""
    decided_at: str = Field(json_schema_extra={"format": "date-time"})
    """When the annotation was set."""
    verified: bool = False
    """True when the admission policies were in place, so that deciding needed verb approve on
    goals.overseer.dev and decidedBy is the API server's; false means anyone who could patch the Goal
    may have decided, under any name."""


class CapabilityCalls(ApiModel):
    """How one Capability's calls went in one goal."""

    name: str
    """The Capability."""
    calls: int = Field(default=0, ge=0)
    """Calls made."""
    failures: int = Field(default=0, ge=0)
    """Calls that returned an error."""
    recent_ms: list[int] = Field(default_factory=list, max_length=RECENT_CALLS)
    """Latency in milliseconds of the most recent calls, oldest first."""


class GoalWorkspace(ApiModel):
    """Where the goal's files live."""

    claim_name: str | None = None
    """The goal's PersistentVolumeClaim; unset when its workspace is an emptyDir (lost with each pod)."""
    claim_phase: str | None = None
    """The claim's phase as last seen: Pending, Bound or Lost."""
    source_claim: str | None = None
    """The dependency's claim this goal starts from (spec.workspaceFrom)."""


class KnowledgeBacklog(ApiModel):
    """Knowledge-base writes the goal's agent holds because PostgreSQL refused them."""

    reason: Literal["DiskFull", "Unavailable"]
    """DiskFull: PostgreSQL answered disk_full (SQLSTATE 53100); Unavailable: it did not answer or
    refused for another passing reason (an outage, a restart, too many connections)."""
    message: str = Field(default="", max_length=1024)
    """What PostgreSQL said, what waits and what puts it right."""
    queued_writes: int = 0
    """Writes (checkpoints, experiences, approval decisions, lesson uses) waiting in the pod's
    memory and spool file; they are stored in order once PostgreSQL takes them."""
    since: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the first of them was refused."""


class GoalStatus(ApiModel):
    """Observed state of a Goal."""

    phase: Phase = Phase.PENDING
    """Pending, Blocked, Queued, Running, AwaitingApproval, Succeeded, Failed or Cancelled."""
    conditions: Conditions
    """Ready: True once Succeeded; while False, its reason is the phase (or why the goal ended) and
    its message what the goal waits for or why it ended, blank while Running. Reconciling: True
    while the goal is under way (Pending to AwaitingApproval). Stalled: True once Failed or
    Cancelled. (Ready, Reconciling and Stalled are what kstatus, Flux and `kubectl wait` read.)
    Dispatched: whether a pod runs the current attempt, or why not yet (AgentNotFound,
    AgentNotReady, ParentStarting, DependenciesPending, WaitingForSlot, QuotaExceeded, RetryBackoff).
    DependenciesMet: only with spec.dependsOn. WorkspaceReady: only with a claim (the Agent's
    spec.workspace), False while the claim is not Bound (ClaimPending, ClaimLost) or the
    dependency of spec.workspaceFrom has none (SourceClaimMissing). Complete: set when the goal ends, True if it
    succeeded."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    message: str | None = None
    """Why the goal is in its phase, in one line."""
    agent: str | None = None
    """The Agent working on this goal."""
    pod: str | None = None
    """The pod of the current attempt."""
    workspace: GoalWorkspace | None = None
    """The goal's PersistentVolumeClaim, when its Agent has spec.workspace."""
    attempt: int = 0
    """The current attempt, from 1."""
    waiting_for: list[str] = Field(default_factory=list)
    """Dependencies that have not succeeded yet."""
    retry_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the next attempt may start after a failed one."""
    last_exit_code: int | None = None
    """Exit code of the last finished attempt."""
    iteration: int = 0
    """Model calls made so far."""
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens used so far."""
    cost: GoalCost | None = None
    """Spend in US dollars, written by the model gateway."""
    progress: str | None = None
    """The agent's TODO list done over total, such as 3/7, or `iteration N` while it keeps none."""
    heartbeat: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """Last sign of life from the agent."""
    result: str | None = None
    """What the agent reported when it finished."""
    failure_reason: str | None = None
    """Why the agent gave up, when it did (e.g. BudgetExhausted, Refusal); such a failure is not retried."""
    last_tool: str | None = None
    """The agent's latest tool call, in one line."""
    knowledge_backlog: KnowledgeBacklog | None = None
    """Set by the agent while its knowledge-base writes wait for PostgreSQL (cleared once they are
    stored); the operator shows it in the Agent's KnowledgeBase condition."""
    capability_calls: list[CapabilityCalls] = Field(default_factory=list, max_length=256)
    """Calls of each Capability in this goal so far, reported by the agent; the operator sums them up
    in each Capability's status."""
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    """Requests waiting for approval."""
    decisions: list[ApprovalDecision] = Field(default_factory=list)
    """Approvals and denials so far, as the operator recorded them (it rewrites any other writer's list)."""
    started_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the first attempt started."""
    completed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the goal reached a terminal phase."""


class Goal(CustomResource):
    """One piece of work, described in prose, for an agent to carry out in its own pod."""

    kind_name: ClassVar[str] = "Goal"
    plural: ClassVar[str] = "goals"
    short_names: ClassVar[list[str]] = ["gl"]
    # A warm pod learns which goal claimed it by watching for the goal whose status.pod names it.
    selectable_fields: ClassVar[list[str]] = [".status.pod"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Agent", type="string", json_path=".status.agent"),
        PrinterColumn(name="Progress", type="string", json_path=".status.progress"),
        PrinterColumn(name="Tokens", type="integer", json_path=".status.tokens.total"),
        PrinterColumn(name="Cost", type="number", json_path=".status.cost.usd", description="US dollars spent"),
        PrinterColumn(name="Attempt", type="integer", json_path=".status.attempt", priority=1),
        # Ready's message: what a goal waits for or why it ended, blank while Running or Succeeded.
        PrinterColumn(name="Message", type="string", json_path='.status.conditions[?(@.type=="Ready")].message'),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    kind: str = "Goal"
    spec: GoalSpec
    status: GoalStatus = Field(default_factory=GoalStatus)


def queue_key(goal: Mapping[str, Any]) -> tuple[int, str, str]:
    """Order of an Agent's queue of goals (raw objects): higher priority first, then older, then by name."""
    return (-int(goal.get("spec", {}).get("priority", 0)),
            goal["metadata"].get("creationTimestamp", ""), goal["metadata"]["name"])
