"""Capability: a tool an agent may use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import (OBJECT_NAME, ApiModel, Conditions, CustomResource, Duration, LabelSelector, PrinterColumn, Risk,
                   SecretKeySelector)


class Header(ApiModel):
    """One request header: a literal value, or one read from a Secret by the goal pod (the model
    never sees it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.value) != has(self.secretKeyRef)",
                 "message": "set either value or secretKeyRef, not both and not neither"}
            ]
        }
    )

    name: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=256)
    """Header name, e.g. Authorization."""
    value: str | None = Field(default=None, max_length=4096)
    """Literal value, for what is no secret."""
    secret_key_ref: SecretKeySelector | None = None
    """Secret (same namespace) and key holding the value, e.g. "Bearer ..." for Authorization."""


class CommandEnvVar(ApiModel):
    """An environment variable of the command, from a key of a Secret in the Capability's namespace."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Variable name, e.g. DEPLOY_TOKEN."""
    secret_key_ref: SecretKeySelector
    """The Secret key holding the value."""


class CommandTool(ApiModel):
    """A command run inside the goal's pod, with the call's input as JSON on stdin."""

    run: list[str] = Field(min_length=1, max_length=256,
                           json_schema_extra={"items": {"type": "string", "maxLength": 4096}})
    """argv of the command, e.g. ["python", "-m", "pytest", "-q"]."""
    timeout: Duration = "5m"
    """How long one call may take."""
    env: list[CommandEnvVar] = Field(default_factory=list)
    """Credentials of this command only: set in its process and no other (not the bash tool's),
    and never shown to the model."""


class HttpTool(ApiModel):
    """An HTTP endpoint that receives the call's input as a JSON body."""

    url: str = Field(pattern=r"^https?://", max_length=2048)
    """Endpoint URL."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    """HTTP method; GET and DELETE send the input as query parameters, the others as a JSON body."""
    headers: list[Header] = Field(default_factory=list, max_length=32)
    """Request headers, e.g. Authorization from a Secret."""
    timeout: Duration = "60s"
    """How long one call may take."""
    max_response_bytes: int = Field(default=1_048_576, ge=1, le=67_108_864)
    """Responses longer than this are cut off, and the model is told so."""


class McpServer(ApiModel):
    """A Model Context Protocol server whose tools the agent gets, each under the name
    CAPABILITY__TOOL with the server's own input schema."""

    url: str = Field(pattern=r"^https?://", max_length=2048)
    """URL of the MCP server (streamable HTTP transport), e.g. http://mcp.tools.svc:8000/mcp."""
    tools: list[str] = Field(default_factory=list, max_length=256,
                             json_schema_extra={"items": {"type": "string", "maxLength": 128}})
    """Offer only these of the server's tools; empty offers every tool it lists."""
    tool_risk: dict[str, Risk] = Field(default_factory=dict, json_schema_extra={"maxProperties": 256})
    """Risk per tool name, overriding spec.risk, e.g. {delete_issue: high}."""
    headers: list[Header] = Field(default_factory=list, max_length=32)
    """Headers sent with every request to the server, e.g. Authorization from a Secret."""
    timeout: Duration = "60s"
    """How long one tool call may take."""


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

    cidr: str | None = Field(default=None, max_length=64, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$", json_schema_extra={
        "x-kubernetes-validations": [{
            "rule": "isCIDR(self)",
            "message": "must be an IP range such as 10.0.0.0/8 or fd00::/8: four numbers up to 255 and a prefix "
                       "up to /32 (IPv4) or /128 (IPv6)",
        }],
    })
    """Destination IP range, e.g. 10.0.0.0/8."""
    namespace_selector: LabelSelector | None = None
    """In-cluster destination: namespaces with these labels."""
    pod_selector: LabelSelector | None = None
    """In-cluster destination: pods with these labels."""
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list, max_length=32)
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
    mcp: McpServer | None = None
    """Offer the tools of an MCP server."""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    """JSON Schema of the tool's input; calls are validated against it."""
    egress: list[EgressRule] = Field(default_factory=list, max_length=32)
    """Network destinations the tool needs; added to the NetworkPolicy of agents that use it."""
    requires: list[str] = Field(default_factory=list, max_length=32,
                                json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": OBJECT_NAME}})
    """Other Capabilities (same namespace) this one depends on."""
    version: str | None = Field(default=None, max_length=128)
    """Free-form version of the tool."""


class CapabilityStatus(ApiModel):
    """Observed state of a Capability."""

    conditions: Conditions
    """Ready, with a reason when the capability cannot be used."""
    observed_generation: int | None = None
    """The metadata.generation last validated."""
    used_by: list[str] = Field(default_factory=list)
    """Agents that list this capability, or one that requires it."""
    tools: list[str] = Field(default_factory=list)
    """For an MCP server: the tools the operator found on it (after spec.mcp.tools narrowed them)."""
    tool_count: int | None = None
    """How many tools are in status.tools."""
    calls: int | None = None
    """Calls made by the goals that still exist (agents report them in their Goal's status)."""
    failures: int | None = None
    """Of those, calls that returned an error."""
    latency_p50_ms: int | None = None
    """Median latency in milliseconds over the most recent calls (up to 100)."""


class Capability(CustomResource):
    """A tool an agent may use: how it runs, its input schema, its risk and the network it needs."""

    kind_name: ClassVar[str] = "Capability"
    plural: ClassVar[str] = "capabilities"
    short_names: ClassVar[list[str]] = ["cap"]
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Risk", type="string", json_path=".spec.risk"),
        PrinterColumn(name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn(name="Reason", type="string", json_path='.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn(name="Tools", type="integer", json_path=".status.toolCount"),
        PrinterColumn(name="Calls", type="integer", json_path=".status.calls"),
        PrinterColumn(name="Failures", type="integer", json_path=".status.failures"),
        PrinterColumn(name="P50-ms", type="integer", json_path=".status.latencyP50Ms"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    kind: str = "Capability"
    spec: CapabilitySpec
    status: CapabilityStatus = Field(default_factory=CapabilityStatus)


def with_requirements(names: Iterable[str], requires_of: Callable[[str], list[str] | None]) -> dict[str, list[str]]:
    """Every capability the named ones need, transitively, each with the chain that brings it in
    (["lint", "fmt"]: lint requires fmt). requires_of answers None for one that does not exist;
    it is kept, so the caller can name the missing link. Cycles end where they close."""
    chains: dict[str, list[str]] = {}
    todo = [[name] for name in names]
    while todo:
        chain = todo.pop(0)
        name = chain[-1]
        if name in chains:
            continue
        chains[name] = chain
        todo.extend(chain + [r] for r in requires_of(name) or [] if r not in chains)
    return chains
