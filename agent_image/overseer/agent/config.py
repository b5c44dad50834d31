"""What a goal pod is told by the operator: one typed settings object from its environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    """Identity of the goal and where the shared services are. ANTHROPIC_API_KEY and
    ANTHROPIC_BASE_URL are read by the anthropic SDK itself."""

    model_config = SettingsConfigDict(env_prefix="OVERSEER_")

    goal_name: str
    goal_namespace: str
    goal_uid: str = ""
    agent_name: str
    attempt: int = 1
    pod_name: str = ""
    workspace: Path = Path("/workspace")
    model: str = ""
    database_url: str | None = None
    """PostgreSQL knowledge base (checkpoints, experiences, lessons); without it the agent keeps
    checkpoints in the workspace only."""
    redis_url: str | None = None
    """Redis (shared rate limit, live events, steering); without it limits are local."""
    health_port: int = 9090
    """Port of /healthz and /metrics; 0 turns them off."""
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    """How often the heartbeat in the Goal's status is refreshed while the model thinks."""
    context_tokens: int = Field(default=200_000, gt=0)
    """The model's context window."""
    compact_at: float = Field(default=0.75, gt=0, lt=1)
    """Share of the context window after which older turns are compacted into a summary."""
    max_subgoal_depth: int = Field(default=3, ge=0)
    """How deep sub-goals may nest."""
    requests_per_minute: int = Field(default=0, ge=0)
    """Model API requests per minute for this API key across all pods; 0 = no limit."""
    tokens_per_minute: int = Field(default=0, ge=0)
    """Model API tokens per minute for this API key across all pods; 0 = no limit."""
