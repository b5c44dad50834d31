"""The goal pod contract: what the operator tells a goal pod, and how the pod answers.

Two deployables meet here. The pod renderer (overseer.operator.pods) sets the environment,
the agent (overseer.agent.config) reads it, and the agent's exit code tells the operator
(overseer.operator.goals) whether another attempt is worth it. The README's table of the
agent's environment is checked against `Env` by tests/test_contract.py.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum, StrEnum

COMMAND = "overseer-agent"
"""The agent image's entry point."""

TOOLS_COMMAND = "overseer-tools"
"""The entry point of the goal pod's tools container (same image): it runs the tools' processes."""

TOOLS_SOCKET = "/run/overseer-tools/tools.sock"
"""Where the tools container listens; its folder is an emptyDir both containers mount."""

WORKSPACE = "/workspace"
"""Where the goal's workspace volume is mounted; the container's working directory."""

AGENT_UID = 65532
"""The uid a goal pod runs as: the agent image's non-root user ("nonroot" of distroless images)."""


class Env(StrEnum):
    """The environment of a goal pod's containers (the tools container gets only WORKSPACE and
    TOOLS_SOCKET)."""

    # who it is
    GOAL_NAME = "OVERSEER_GOAL_NAME"
    GOAL_NAMESPACE = "OVERSEER_GOAL_NAMESPACE"
    AGENT_NAME = "OVERSEER_AGENT_NAME"
    WORKSPACE = "OVERSEER_WORKSPACE"
    TOOLS_SOCKET = "OVERSEER_TOOLS_SOCKET"
    # read by the anthropic SDK itself
    ANTHROPIC_API_KEY = "ANTHROPIC_API_KEY"
    ANTHROPIC_BASE_URL = "ANTHROPIC_BASE_URL"
    # with a model gateway: the pod's projected token for it, instead of a key
    GATEWAY_TOKEN_FILE = "OVERSEER_GATEWAY_TOKEN_FILE"
    # from the operator's settings (OVERSEER_AGENT_*), set only when configured
    DATABASE_URL = "OVERSEER_DATABASE_URL"
    REDIS_URL = "OVERSEER_REDIS_URL"
    REQUESTS_PER_MINUTE = "OVERSEER_REQUESTS_PER_MINUTE"
    TOKENS_PER_MINUTE = "OVERSEER_TOKENS_PER_MINUTE"
    HEALTH_PORT = "OVERSEER_HEALTH_PORT"
    # tuning, with defaults in the agent
    HEARTBEAT_SECONDS = "OVERSEER_HEARTBEAT_SECONDS"
    CONTEXT_TOKENS = "OVERSEER_CONTEXT_TOKENS"
    COMPACT_AT = "OVERSEER_COMPACT_AT"
    MAX_SUBGOAL_DEPTH = "OVERSEER_MAX_SUBGOAL_DEPTH"


CAPABILITY_ENV_PREFIX = "OVERSEER_CAPABILITY_"


def capability_env(capability: str, variable: str) -> str:
    """The agent container's variable holding a command Capability's credential `variable`
    (spec.command.env); the agent hands it to that command alone."""
    return f"{CAPABILITY_ENV_PREFIX}{hashlib.sha256(capability.encode()).hexdigest()[:12]}_{variable}"


class ExitCode(IntEnum):
    """How the agent's process ends."""

    SUCCEEDED = 0
    RETRY = 1
    """Failed, and another attempt may succeed (a crash, the model API unavailable)."""
    GAVE_UP = 2
    """Failed in a way a retry cannot fix (budget spent, a refusal, cancelled): not retried."""
