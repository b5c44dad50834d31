"""Agent: a kind of worker and the policy around it."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import (
    OBJECT_NAME,
    ApiModel,
    Conditions,
    CustomResource,
    Duration,
    PrinterColumn,
    Quantity,
    SecretKeySelector,
)


# A container image reference (the grammar of distribution/reference): an optional registry
# host and port, lowercase path components, an optional tag and an optional digest.
_HOST = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?"
_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (rf"^({_HOST}/)?{_COMPONENT}(/{_COMPONENT})*(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}})?"
                 r"(@[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})?$")


class ModelSpec(ApiModel):
    """Which Claude model the agent calls, and how."""

    name: str = Field(min_length=1, examples=["claude-sonnet-5-5"])
    """Model name as the Messages API knows it, e.g. claude-sonnet-5-5."""
    max_tokens: int = Field(default=8192, ge=1, le=128000)
    """Upper bound on output tokens per model call."""
    api_key_secret_ref: SecretKeySelector
    """Secret key holding the API key; mounted into the goal pods as ANTHROPIC_API_KEY."""
    base_url: str | None = Field(default=None, alias="baseURL", pattern=r"^https?://")
    """Any Anthropic-compatible endpoint; defaults to the public API."""


class Budget(ApiModel):
    """Limits on what one goal may spend."""

    max_tokens_per_goal: int | None = Field(default=None, ge=1)
    """Input plus output tokens a goal may use before it fails with BudgetExhausted."""
    max_iterations_per_goal: int | None = Field(default=None, ge=1)
    """Model calls a goal may make."""
    max_wall_clock: Duration | None = None
    """How long a goal may run, e.g. 30m."""
    max_cost_per_goal: float | None = Field(default=None, ge=0)
    """US dollars a goal (all its attempts) may spend on model calls through the model gateway before it
    fails with BudgetExhausted, priced from the gateway's price table."""


class AgentBudget(Budget):
    """Per-goal limits (a Goal may override them) and what all of the Agent's goals together may spend
    in a UTC day (a Goal cannot change that)."""

    max_tokens_per_day: int | None = Field(default=None, ge=1)
    """Tokens all of this agent's goals may use through the model gateway in one UTC day; a call that
    does not fit fails its goal with BudgetExhausted."""
    max_cost_per_day: float | None = Field(default=None, ge=0)
    """US dollars all of this agent's goals may spend through the model gateway in one UTC day."""


class AgentCost(ApiModel):
    """What an Agent's goals cost, in US dollars, as the model gateway's spend ledger records it."""

    today_usd: float = 0
    """Spent since midnight UTC of `day`."""
    total_usd: float = 0
    """Spent in all."""
    day: str | None = None
    """The UTC day todayUsd counts, e.g. 2026-12-01."""


# What a container may request: the names the API server takes in a pod's resources.
_CONTAINER_RESOURCES = ["cpu", "memory", "ephemeral-storage"]
_CONTAINER_RESOURCE_RULE: Any = {
    "rule": "self.all(k, k in " + str(_CONTAINER_RESOURCES) + " || k.startsWith('hugepages-') || k.contains('/'))",
    "message": "keys must be cpu, memory, ephemeral-storage, hugepages-<size> or a vendor resource "
               "such as nvidia.com/gpu",
}
# What a ResourceQuota may limit without a domain (k8s.io/kubernetes pkg/apis/core/helper,
# standardQuotaResources); names with a "/" (count/deployments.apps, nvidia.com/gpu) pass as they are.
_QUOTA_RESOURCES = [
    "pods", "services", "secrets", "configmaps", "persistentvolumeclaims", "replicationcontrollers",
    "resourcequotas", "services.nodeports", "services.loadbalancers", "cpu", "memory", "ephemeral-storage",
    "requests.cpu", "requests.memory", "requests.storage", "requests.ephemeral-storage", "limits.cpu",
    "limits.memory", "limits.ephemeral-storage",
]


def _resources(description: str) -> Any:
    return Field(default_factory=dict, description=description,
                 json_schema_extra={"maxProperties": 16, "x-kubernetes-validations": [_CONTAINER_RESOURCE_RULE]})


class ResourceRequirements(ApiModel):
    """Compute resources of each goal pod, as in a container's resources."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{
                "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || "
                        "!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
                        "!quantity(string(self.requests[k])).isGreaterThan(quantity(string(self.limits[k]))))",
                "message": "a request must not be above its limit: lower requests or raise limits",
            }]
        }
    )

    requests: dict[str, Quantity] = _resources("Minimum resources, e.g. {cpu: 250m, memory: 256Mi}.")
    limits: dict[str, Quantity] = _resources('Maximum resources, e.g. {cpu: "1", memory: 1Gi}.')


NamespaceOrAll = Annotated[str, Field(max_length=63, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$",
                                      examples=["team-b", "*"])]


class KnowledgeSpec(ApiModel):
    """What this agent shares of the knowledge base. Experiences, patterns and lessons belong to the
    agent's namespace; checkpoints and approval records are never shared."""

    share_with: list[NamespaceOrAll] = Field(default_factory=list, max_length=64)
    """Namespaces whose agents may read this agent's experiences and patterns (and get lessons from
    them); "*" for every namespace. Only this Agent's owner can share: a namespace cannot opt itself
    into another's knowledge."""


AccessMode = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]


class WorkspaceSpec(ApiModel):
    """A PersistentVolumeClaim per Goal that holds its workspace across attempts."""

    size: Quantity = "1Gi"
    """Storage requested by each goal's claim, e.g. 5Gi."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the claims; the cluster's default class when unset."""
    access_modes: list[AccessMode] = Field(default_factory=lambda: list[AccessMode](["ReadWriteOnce"]), min_length=1, max_length=3)
    """Access modes of the claims. A dependent goal mounts its dependency's claim after that goal's pod
    has ended, so ReadWriteOnce is enough unless goals share a claim while both run."""
    retain: bool = False
    """Keep each goal's claim when the goal is deleted (it is then no longer owned by the goal), e.g.
    to inspect the files; by default the claim goes with its goal."""


WARM_POOL_MAX = 20


class AgentSpec(ApiModel):
    """Desired state of an Agent."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [{
                "rule": "!has(self.warmPool) || self.warmPool == 0 || !has(self.workspace)",
                "message": "spec.warmPool needs an emptyDir workspace: a warm pod is started before its goal is "
                           "known, and a pod's volumes cannot change later to mount the goal's claim. Remove "
                           "spec.workspace or set spec.warmPool to 0",
                "fieldPath": ".warmPool",
                "reason": "FieldValueForbidden",
            }]
        }
    )

    model: ModelSpec
    """The model this agent calls."""
    role: str | None = Field(default=None, max_length=256)
    """One line saying who the agent is, e.g. "Senior Python engineer"."""
    system_prompt: str | None = Field(default=None, max_length=65536)
    """Instructions given to the model on every goal."""
    capabilities: list[str] = Field(default_factory=list, max_length=64,
                                    json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": OBJECT_NAME}})
    """Names of Capability objects in the same namespace this agent may use."""
    max_concurrent_goals: int = Field(default=1, ge=1, le=1000)
    """How many of this agent's goals run at once; the rest wait in phase Queued."""
    budget: AgentBudget = Field(default_factory=AgentBudget)
    """Spending limits: per goal (defaults a Goal may override) and per UTC day for the whole agent."""
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """Compute resources of each goal pod."""
    quota: dict[str, Quantity] | None = Field(default=None, json_schema_extra={
        "maxProperties": 32,
        "x-kubernetes-validations": [
            {
                "rule": "self.all(k, k in " + str(_QUOTA_RESOURCES) + " || k.startsWith('hugepages-') || "
                        "k.startsWith('requests.hugepages-') || k.contains('/'))",
                "message": "keys must be ResourceQuota resources: pods, requests.cpu, requests.memory, "
                           "limits.cpu, limits.memory, ... or count/<resource>",
            },
            {
                "rule": "self.all(k, !isQuantity(string(self[k])) || quantity(string(self[k])).isGreaterThan(quantity('0')))",
                "message": "a quota of 0 stops every pod of the namespace, not only this agent's: "
                           "leave the key out or give at least 1",
            },
        ],
    })
    """Becomes a ResourceQuota in the namespace (keys as in ResourceQuota.spec.hard, e.g. pods, requests.cpu).
    It counts every pod of the namespace, not only this agent's goal pods."""
    image: str | None = Field(default=None, max_length=512, json_schema_extra={
        "x-kubernetes-validations": [{
            "rule": f"self.matches(r'{IMAGE_PATTERN}')",
            "message": "must be an image reference such as ghcr.io/org/agent:1.2 or "
                       "registry:5000/agent@sha256:<digest>, without spaces",
        }],
    })
    """Container image of the goal pods; defaults to the operator's agent image."""
    delegates: list[str] = Field(
        default_factory=list, max_length=64,
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
    )
    """Other Agents (same namespace) this agent may hand sub-goals to; it may always hand them to itself."""
    max_subgoals_per_goal: int = Field(default=5, ge=0, le=100)
    """How many unfinished sub-goals one of this agent's goals may have at once; the operator fails any beyond."""
    knowledge: KnowledgeSpec = Field(default_factory=KnowledgeSpec)
    """The knowledge base: what this agent shares with other namespaces (nothing by default)."""
    code_execution: Literal["RequiresApproval", "Allowed"] = "RequiresApproval"
    """Shell commands that run code the classifier cannot read (python3 -c, node -e, eval, source, here-documents
    fed to a shell or interpreter, command names known only when they run): RequiresApproval makes them high
    risk, so the default approval policy (minRisk high) waits for a person; Allowed makes them medium, like
    other writes in the workspace."""
    workspace: WorkspaceSpec | None = None
    """A PersistentVolumeClaim per goal for its workspace, kept across attempts so a replaced pod finds
    the files of the one before. Without it the workspace is an emptyDir: a pod lost mid-goal loses its
    files (the conversation resumes from its checkpoint, and the agent tells the model the files are gone)."""
    warm_pool: int = Field(default=0, ge=0, le=WARM_POOL_MAX)
    """Agent pods kept started and idle (imports done, credentials loaded, workspace ready), so a goal
    is claimed by one in well under a second instead of waiting for a pod and a process to start; the
    pool refills behind each claim. Idle pods count against the namespace's quota. Only for agents
    without spec.workspace; goals with spec.workspaceFrom always get a pod of their own."""


class AgentStatus(ApiModel):
    """Observed state of an Agent."""

    conditions: Conditions
    """Ready, CapabilitiesReady, ModelSupported, AdmissionPolicies (whether approvals are verified and
    agents confined by the API server) and KnowledgeBase, with reasons."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    service_account_name: str | None = None
    """The ServiceAccount goal pods of this agent run as."""
    running_goals: int = 0
    """Goals with a live pod."""
    queued_goals: int = 0
    """Goals waiting for a free slot."""
    succeeded_goals: int = 0
    """Goals that finished successfully."""
    failed_goals: int = 0
    """Goals that failed."""
    tokens_used: int = 0
    """Tokens used by all of this agent's goals."""
    cost: AgentCost | None = None
    """Spend in US dollars, written by the model gateway."""
    warm_pods: int = 0
    """Idle warm pods started and ready to claim a goal (spec.warmPool)."""
    modifications: int = 0
    """Approved self-modifications (lessons, script tools) later goals use, i.e. not reverted; they are
    kept in ConfigMap overseer-agent-NAME-modifications."""


class Agent(CustomResource):
    """A kind of worker and the policy around it: model, prompt, capabilities, budget, quota."""

    kind_name: ClassVar[str] = "Agent"
    plural: ClassVar[str] = "agents"
    short_names: ClassVar[list[str]] = ["agt"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn(name="Model", type="string", json_path=".spec.model.name", priority=1),
        PrinterColumn(name="Running", type="integer", json_path=".status.runningGoals"),
        PrinterColumn(name="Queued", type="integer", json_path=".status.queuedGoals", priority=1),
        PrinterColumn(name="Succeeded", type="integer", json_path=".status.succeededGoals"),
        PrinterColumn(name="Failed", type="integer", json_path=".status.failedGoals"),
        PrinterColumn(name="Warm", type="integer", json_path=".status.warmPods", priority=1),
        PrinterColumn(name="Modifications", type="integer", json_path=".status.modifications", priority=1),
        PrinterColumn(name="Cost", type="number", json_path=".status.cost.totalUsd",
                      description="US dollars spent by this agent's goals"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    kind: str = "Agent"
    spec: AgentSpec
    status: AgentStatus = Field(default_factory=AgentStatus)
