"""What a goal pod is told by the operator: one typed settings object from its environment,
read under the names the goal pod contract (overseer.contract) gives.

A plain pydantic model reading exactly those variables: pydantic-settings, whose import brings
its every source (dotenv, cloud secret stores, CLI), cost each goal's start some 30 ms of CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from overseer.contract import WORKSPACE, Env


class AgentSettings(BaseModel):
    """Identity of the goal and where the shared services are, from the environment. ANTHROPIC_API_KEY
    and ANTHROPIC_BASE_URL are read by the anthropic SDK itself."""

    model_config = ConfigDict(populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        names = (str(f.validation_alias) for f in type(self).model_fields.values())
        super().__init__(**{**{name: os.environ[name] for name in names if name in os.environ}, **values})

    goal_name: str | None = Field(default=None, validation_alias=Env.GOAL_NAME.value)
    """Unset in a warm pod, which learns it from the Goal that claims it (pod_name)."""
    pod_name: str | None = Field(default=None, validation_alias=Env.POD_NAME.value)
    """A warm pod's own name: the claiming Goal's status.pod."""
    goal_namespace: str = Field(validation_alias=Env.GOAL_NAMESPACE.value)
    agent_name: str = Field(validation_alias=Env.AGENT_NAME.value)
    workspace: Path = Field(default=Path(WORKSPACE), validation_alias=Env.WORKSPACE.value)
    workspace_volume: str | None = Field(default=None, validation_alias=Env.WORKSPACE_VOLUME.value)
    """claim (kept across attempts) or emptyDir (lost with the pod)."""
    workspace_from: Path | None = Field(default=None, validation_alias=Env.WORKSPACE_FROM.value)
    """A dependency's workspace, mounted read-only (spec.workspaceFrom)."""
    workspace_from_mode: str | None = Field(default=None, validation_alias=Env.WORKSPACE_FROM_MODE.value)
    """Copy (into the workspace, once) or ReadOnly."""
    tools_socket: Path | None = Field(default=None, validation_alias=Env.TOOLS_SOCKET.value)
    """The tools container's socket: bash, command Capabilities and script tools run there, out of
    reach of this container's token and credentials. Unset: they run in this process's container."""
    database_url: str | None = Field(default=None, validation_alias=Env.DATABASE_URL.value)
    """PostgreSQL knowledge base (checkpoints, experiences, lessons); without it the agent keeps
    checkpoints in the workspace only."""
    redis_url: str | None = Field(default=None, validation_alias=Env.REDIS_URL.value)
    """Redis (shared rate limit, live events, steering); without it limits are local."""
    health_port: int = Field(default=9090, validation_alias=Env.HEALTH_PORT.value)
    """Port of /healthz and /metrics; 0 turns them off."""
    heartbeat_seconds: float = Field(default=10.0, gt=0, validation_alias=Env.HEARTBEAT_SECONDS.value)
    """How often the heartbeat in the Goal's status is refreshed while the model thinks."""
    context_tokens: int = Field(default=200_000, gt=0, validation_alias=Env.CONTEXT_TOKENS.value)
    """The model's context window."""
    compact_at: float = Field(default=0.75, gt=0, lt=1, validation_alias=Env.COMPACT_AT.value)
    """Share of the context window after which older turns are compacted into a summary."""
    max_subgoal_depth: int = Field(default=3, ge=0, validation_alias=Env.MAX_SUBGOAL_DEPTH.value)
    """How deep sub-goals may nest."""
    requests_per_minute: int = Field(default=0, ge=0, validation_alias=Env.REQUESTS_PER_MINUTE.value)
    """Model API requests per minute for this API key across all pods; 0 = no limit."""
    tokens_per_minute: int = Field(default=0, ge=0, validation_alias=Env.TOKENS_PER_MINUTE.value)
    """Model API tokens per minute for this API key across all pods; 0 = no limit."""

    @model_validator(mode="after")
    def _knows_its_goal(self) -> AgentSettings:
        if not self.goal_name and not self.pod_name:
            raise ValueError(f"set {Env.GOAL_NAME.value} (the goal to work on) or, in a warm pod, "
                             f"{Env.POD_NAME.value} (the pod a goal claims)")
        return self
