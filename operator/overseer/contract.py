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

AGENT_CONTAINER = "agent"
"""The goal pod's container that runs COMMAND; the heartbeat timeout counts from its start."""

TOOLS_COMMAND = "overseer-tools"
"""The entry point of the goal pod's tools container (same image): it runs the tools' processes."""

TOOLS_SOCKET = "/run/overseer-tools/tools.sock"
"""Where the tools container listens; its folder is an emptyDir both containers mount."""

WORKSPACE = "/workspace"
"""Where the goal's workspace volume is mounted; the container's working directory."""

WORKSPACE_FROM = "/workspace-from"
"""Where a dependency's claim is mounted read-only (WORKSPACE_FROM/GOAL) for spec.workspaceFrom."""

AGENT_UID = 65532
"""The uid a goal pod runs as: the agent image's non-root user ("nonroot" of distroless images)."""


BUILTIN_TOOLS = frozenset({
    "read_file", "list_directory", "glob", "grep", "edit_file", "write_file", "bash", "todo",
    "search_knowledge", "spawn_subgoal", "propose_lesson", "propose_script_tool",
})
"""Tool names the agent gives its own tools. A Capability's tool name (its object name with dots
as underscores) must be none of these: the Messages API refuses two tools of one name."""

TOOL_NAME_MAX = 64
"""The Messages API's longest tool name, so the longest Capability name."""


class Env(StrEnum):
    """The environment of a goal pod's containers (the tools container gets only WORKSPACE and
    TOOLS_SOCKET)."""

    # who it is
    GOAL_NAME = "OVERSEER_GOAL_NAME"  # unset in a warm pod: it waits for the goal that claims it
    POD_NAME = "OVERSEER_POD_NAME"  # a warm pod's own name: the claiming goal's status.pod names it
    GOAL_NAMESPACE = "OVERSEER_GOAL_NAMESPACE"
    AGENT_NAME = "OVERSEER_AGENT_NAME"
    WORKSPACE = "OVERSEER_WORKSPACE"
    # whether the workspace outlives the pod ("claim") or not ("emptyDir")
    WORKSPACE_VOLUME = "OVERSEER_WORKSPACE_VOLUME"
    # spec.workspaceFrom: where the dependency's files are mounted, and Copy or ReadOnly
    WORKSPACE_FROM = "OVERSEER_WORKSPACE_FROM"
    WORKSPACE_FROM_MODE = "OVERSEER_WORKSPACE_FROM_MODE"
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


SECRET_ENV_PREFIX = "OVERSEER_SECRET_"


def secret_env(secret: str, key: str) -> str:
    """The variable through which the agent container gets one key of a Secret that a Capability's
    header names (secretKeyRef). Its OVERSEER_ prefix keeps it out of the tools' environment."""
    return SECRET_ENV_PREFIX + hashlib.sha256(f"{secret}/{key}".encode()).hexdigest()[:16].upper()


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
