"""Gateway configuration: one typed object read from OVERSEER_GATEWAY_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ANTHROPIC_API = "https://api.anthropic.com"


class GatewaySettings(BaseSettings):
    """Every knob of the gateway; docs/gateway.md lists them."""

    model_config = SettingsConfigDict(env_prefix="OVERSEER_GATEWAY_")

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the Messages API (and /healthz)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of Prometheus /metrics; 0 = off."""
    default_base_url: str = Field(default=ANTHROPIC_API, pattern=r"^https?://")
    """Upstream of Agents without spec.model.baseURL."""
    token_cache_seconds: float = Field(default=30.0, ge=0)
    """How long a reviewed token is trusted without asking the API server again; a token of a
    deleted pod works at most this long."""
    object_cache_seconds: float = Field(default=10.0, ge=0)
    """How long a pod, Goal, Agent or API key Secret read from the API server is reused."""
    upstream_connections: int = Field(default=512, ge=1)
    """Size of the pooled upstream connection pool, all endpoints together."""
    upstream_timeout_seconds: float = Field(default=600.0, gt=0)
    """Longest a single upstream call may take (a long streamed answer included)."""
    upstream_connect_seconds: float = Field(default=10.0, gt=0)
    """Longest a new upstream connection may take."""
    client_idle_seconds: float = Field(default=60.0, gt=0)
    """How long a kept-alive client connection may sit with no request before it is closed."""
    client_request_seconds: float = Field(default=60.0, gt=0)
    """Longest a request may take to arrive whole (head and body), else 408 and the connection closed."""
    database_url: str | None = None
    """PostgreSQL of the spend ledger; without it the gateway forwards calls but prices, budgets and
    records nothing."""
    prices_file: str | None = None
    """The price table (YAML, the ConfigMap overseer-gateway-prices mounted as a file); re-read when it
    changes. Without it the built-in list prices apply."""
    budget_refresh_seconds: float = Field(default=5.0, gt=0)
    """How often a goal's spend is read again from the ledger (what other replicas spent shows up)."""
    budget_lease_calls: int = Field(default=128, ge=1)
    """Most calls' worst cases one replica holds ahead in Redis for a set of budgets (a lease; never more
    than a 16th of what is free in them), so those calls need no Redis round trip; 1: every call holds
    its own."""
    budget_lease_seconds: float = Field(default=5.0, gt=0)
    """How long a lease takes new calls; its unused part is given back then."""
    status_interval_seconds: float = Field(default=2.0, gt=0)
    """How often Goal.status.cost and Agent.status.cost are written for goals that spent."""
    redis_url: str | None = None
    """Redis holding the budget counters all replicas share; without it each replica counts alone
    between reads of the ledger."""
    budgets_file: str | None = None
    """The namespaces' daily budgets (YAML, the ConfigMap overseer-gateway-budgets mounted as a file,
    platform-owned); re-read when it changes. Without it namespaces have no daily budget."""
    requests_per_minute: int = Field(default=0, ge=0)
    """Model calls per minute through this gateway, all Agents together (every replica shares it via
    Redis); 0: no limit."""
    tokens_per_minute: int = Field(default=0, ge=0)
    """Tokens (input estimate, then what calls used) per minute, all Agents together; 0: no limit."""
    agent_requests_per_minute: int = Field(default=0, ge=0)
    """Model calls per minute of each Agent; 0: no limit."""
    agent_tokens_per_minute: int = Field(default=0, ge=0)
    """Tokens per minute of each Agent; 0: no limit."""
    rate_limit_wait_seconds: float = Field(default=2.0, ge=0)
    """How long a call over a rate limit waits for room before it is answered 429 with retry-after."""
    rate_limit_replicas: int = Field(default=2, ge=1)
    """Gateway replicas; while Redis is down each one limits alone to this share of the limits."""
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    """The rate limits' window: 60 makes them per minute (a shorter one scales them down, for tests)."""
