"""Capability: a tool an agent may use."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import ApiModel, Conditions, CustomResource, Duration, LabelSelector, PrinterColumn, SecretKeySelector

Risk = Literal["low", "medium", "high"]


class CommandEnvVar(ApiModel):
    """An environment variable of the command, from a key of a Secret in the Capability's namespace."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Variable name, e.g. DEPLOY_TOKEN."""
    secret_key_ref: SecretKeySelector
    """The Secret key holding the value."""


class CommandTool(ApiModel):
    """A command run inside the goal's pod, with the call's input as JSON on stdin."""

    run: list[str] = Field(min_length=1)
    """argv of the command, e.g. ["python", "-m", "pytest", "-q"]."""
    timeout: Duration = "5m"
    """How long one call may take."""
    env: list[CommandEnvVar] = Field(default_factory=list)
    """Credentials of this command only: set in its process and no other (not the bash tool's),
    and never shown to the model."""


class HttpTool(ApiModel):
    """An HTTP endpoint that receives the call's input as a JSON body."""

    url: str = Field(pattern=r"^https?://")
    """Endpoint URL."""
    method: Literal["GET", "POST", "PUT"] = "POST"
    """HTTP method."""
    timeout: Duration = "60s"
    """How long one call may take."""


class McpTool(ApiModel):
    """A tool served by a Model Context Protocol server."""

    url: str = Field(pattern=r"^https?://")
    """URL of the MCP server (streamable HTTP transport)."""
    tool: str | None = None
    """Name of the tool on that server; defaults to the Capability's name."""


class EgressRule(ApiModel):
    """Where the capability needs to connect. NetworkPolicy cannot match host names, so
    name a CIDR or in-cluster pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "message": "set either cidr or namespaceSelector/podSelector, not both and not neither",
                }
            ]
        }
    )

    cidr: str | None = Field(default=None, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")
    """Destination IP range, e.g. 10.0.0.0/8."""
    namespace_selector: LabelSelector | None = None
    """In-cluster destination: namespaces with these labels."""
    pod_selector: LabelSelector | None = None
    """In-cluster destination: pods with these labels."""
    ports: list[int] = Field(default_factory=list, max_length=32)
    """Destination ports; empty means all ports."""
    protocol: Literal["TCP", "UDP"] = "TCP"
    """Transport protocol of the ports."""


class CapabilitySpec(ApiModel):
    """Desired state of a Capability. Exactly one of command, http or mcp says how it runs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.command), has(self.http), has(self.mcp)].filter(x, x).size() == 1",
                    "message": "set exactly one of command, http or mcp",
                }
            ]
        }
    )

    description: str = Field(min_length=1, max_length=4096)
    """What the tool does; shown to the model."""
    risk: Risk = "low"
    """low, medium or high; every call of a high-risk capability waits for approval."""
    command: CommandTool | None = None
    """Run a command in the goal's pod."""
    http: HttpTool | None = None
    """Call an HTTP endpoint."""
    mcp: McpTool | None = None
    """Call a tool of an MCP server."""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    """JSON Schema of the tool's input; calls are validated against it."""
    egress: list[EgressRule] = Field(default_factory=list, max_length=32)
    """Network destinations the tool needs; added to the NetworkPolicy of agents that use it."""
    requires: list[str] = Field(default_factory=list, max_length=32)
    """Other Capabilities (same namespace) this one depends on."""
    version: str | None = None
    """Free-form version of the tool."""


class CapabilityStatus(ApiModel):
    """Observed state of a Capability."""

    conditions: Conditions
    """Ready, with a reason when the capability cannot be used."""
    observed_generation: int | None = None
    """The metadata.generation last validated."""
    used_by: list[str] = Field(default_factory=list)
    """Agents that list this capability."""


class Capability(CustomResource):
    """A tool an agent may use: how it runs, its input schema, its risk and the network it needs."""

    kind_name: ClassVar[str] = "Capability"
    plural: ClassVar[str] = "capabilities"
    short_names: ClassVar[list[str]] = ["cap"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Risk", type="string", json_path=".spec.risk"),
        PrinterColumn(name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn(name="Reason", type="string", json_path='.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    kind: str = "Capability"
    spec: CapabilitySpec
    status: CapabilityStatus = Field(default_factory=CapabilityStatus)
