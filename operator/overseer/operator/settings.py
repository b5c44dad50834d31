"""Operator configuration: one typed object read from OVERSEER_* environment variables."""

from __future__ import annotations

import ipaddress
import os

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from overseer import __version__

AGENT_IMAGE_REPOSITORY = "overseer/agent"


def default_agent_image() -> str:
    """The agent image built from the same release as this operator (`make images` tags it so)."""
    return f"{AGENT_IMAGE_REPOSITORY}:{__version__}"


class ServiceEgress(BaseModel):
    """Where goal pods reach a service NetworkPolicy must open: its pods (namespace and labels) or
    its addresses (CIDRs, for one outside the cluster), on its ports. Empty: not opened."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    namespace: str = ""
    pod_labels: dict[str, str] = {}
    cidrs: list[str] = []
    ports: list[int] = []

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"cidrs: {c!r} is not a CIDR such as 10.0.0.0/8 or 192.0.2.10/32") from None
        return cidrs

    @model_validator(mode="after")
    def _one_way(self) -> ServiceEgress:
        by_pods = bool(self.namespace or self.pod_labels)
        if by_pods and self.cidrs:
            raise ValueError("set either namespace and podLabels (pods in the cluster) or cidrs (addresses), not both")
        if self.pod_labels and not self.namespace:
            raise ValueError("podLabels needs namespace: the namespace the service's pods run in")
        if (by_pods or self.cidrs) and not self.ports:
            raise ValueError("ports: name the service's ports (those of its pods, not of its Service), e.g. [5432]")
        if self.ports and not (by_pods or self.cidrs):
            raise ValueError("ports without a destination: set namespace (and podLabels) or cidrs too")
        if any(not 0 < p < 65536 for p in self.ports):
            raise ValueError(f"ports: {self.ports} must be within 1-65535")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.ports)


class Settings(BaseSettings):
    """Every knob of the operator; the README's configuration table lists them."""

    model_config = SettingsConfigDict(env_prefix="OVERSEER_")

    agent_image: str = Field(default_factory=default_agent_image)
    """Image of goal pods when an Agent names none; by default the agent image of this release."""
    workers: int = Field(default=16, ge=1)
    """Concurrent reconciles per kind."""
    resync_seconds: float = Field(default=300.0, gt=0)
    """How often every object is reconciled again to repair drift."""
    retry_backoff_seconds: float = Field(default=10.0, ge=0)
    """Delay before the first retry of a failed attempt; doubles per attempt."""
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0)
    """Upper bound of the retry delay."""
    heartbeat_timeout_seconds: float = Field(default=300.0, ge=0)
    """A running goal whose agent has not reported for this long, counted from the agent container's
    start, gets its pod replaced; 0 = never."""
    secret_recheck_seconds: float = Field(default=30.0, gt=0)
    """How soon an Agent whose API key Secret is missing is checked again (Secrets are not watched)."""
    mcp_probe_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long the operator waits for an MCP server to list its tools when a Capability changes."""
    mcp_probe_retry_seconds: float = Field(default=60.0, gt=0)
    """How soon an MCP server that could not be probed is tried again."""
    model_egress_cidrs: list[str] = []
    """Where goal pods may reach their model endpoint (NetworkPolicy cannot match host names). Empty: nowhere;
    Agents show ModelEgress=False unless a gateway is configured."""
    model_egress_except: list[str] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    """Ranges carved out of model_egress_cidrs that contain them (the cluster's own networks)."""
    model_egress_ports: list[int] = [443]
    """Ports of the model endpoint."""
    api_server_cidrs: list[str] = []
    """Kubernetes API server addresses agents may reach (to report status); e.g. ["10.0.0.1/32"]."""
    api_server_ports: list[int] = [443, 6443]
    """Ports of the Kubernetes API server."""
    dns_namespace: str = "kube-system"
    """Namespace of the cluster DNS pods."""
    dns_pod_labels: dict[str, str] = {"k8s-app": "kube-dns"}
    """Labels of the cluster DNS pods agents may query."""
    knowledge_egress: ServiceEgress = ServiceEgress()
    """Where goal pods reach the knowledge base's PostgreSQL (JSON: {"namespace", "podLabels", "ports"} or
    {"cidrs", "ports"}); empty: not opened."""
    redis_egress: ServiceEgress = ServiceEgress()
    """Where goal pods reach Redis, in the same form; empty: not opened."""
    monitoring_namespace: str = ""
    """Namespace whose pods may scrape goal pods' metrics port; empty: no ingress to goal pods at all."""
    monitoring_pod_labels: dict[str, str] = {}
    """Labels of the scraping pods in monitoring_namespace; empty: any pod there."""
    knowledge_admin_url: str | None = None
    """Admin login of the PostgreSQL knowledge base (checkpoints, experiences, lessons): the operator
    migrates it and gives each namespace its own login, in the Secret overseer-knowledge that goal
    pods read. Unset: no knowledge base (goal pods keep checkpoints in their workspace)."""
    agent_redis_url: str | None = None
    """Redis handed to goal pods (shared rate limit, live events, steering)."""
    agent_requests_per_minute: int = Field(default=0, ge=0)
    """Model API requests per minute shared by all goal pods of an API key, when they call the model API
    themselves (no gateway_url; the gateway has limits of its own); 0 = no limit."""
    agent_tokens_per_minute: int = Field(default=0, ge=0)
    """Model API tokens per minute shared by all goal pods of an API key, without a gateway; 0 = no limit."""
    gateway_url: str | None = Field(default=None, pattern=r"^https?://")
    """The model gateway's Service URL: goal pods call the model through it with a projected token and get
    no API key; unset, they get the Agent's key and call its model endpoint themselves."""
    gateway_prices_file: str | None = None
    """The gateway's price table (the ConfigMap overseer-gateway-prices mounted as a file, as in the gateway);
    an Agent whose model it does not price gets condition PriceKnown=False. Unset: the built-in list prices."""
    gateway_namespace: str = "overseer-system"
    """Namespace of the gateway's pods, which goal pods may reach instead of the model API."""
    gateway_pod_labels: dict[str, str] = {"app.kubernetes.io/name": "overseer-gateway"}
    """Labels of the gateway's pods."""
    gateway_pod_port: int | None = Field(default=None, ge=1, le=65535)
    """Port the gateway's pods listen on, which goal pods' NetworkPolicy opens (a policy sees the pod's port, not
    the Service's); unset: the port of gateway_url."""
    agent_metrics_port: int = 9090
    """Port of the agent's /metrics and /healthz inside goal pods."""
    admission_check_seconds: float = Field(default=60.0, gt=0)
    """How often the operator checks that its admission policies are installed (condition AdmissionPolicies)."""
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    """Under --leader-elect: how long a Lease nobody renews stays taken."""
    lease_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    """Under --leader-elect: a leader that cannot renew for this long stops reconciling."""
    lease_retry_period_seconds: float = Field(default=2.0, gt=0)
    """Under --leader-elect: how often the Lease is renewed, or tried by a waiting replica."""

    @model_validator(mode="after")
    def _no_shared_login(self) -> Settings:
        if os.environ.get("OVERSEER_AGENT_DATABASE_URL"):
            raise ValueError(
                "OVERSEER_AGENT_DATABASE_URL is no longer read: one login for every namespace let each read the "
                "others' knowledge. Set OVERSEER_KNOWLEDGE_ADMIN_URL to a login that owns the knowledge-base "
                "database and may create roles (CREATEROLE); the operator gives each namespace its own login")
        return self

    @model_validator(mode="after")
    def _lease_timings(self) -> Settings:
        if not self.lease_retry_period_seconds < self.lease_renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                "OVERSEER_LEASE_RETRY_PERIOD_SECONDS < OVERSEER_LEASE_RENEW_DEADLINE_SECONDS < "
                "OVERSEER_LEASE_DURATION_SECONDS must hold (a leader must stop before its Lease can be taken)")
        return self
