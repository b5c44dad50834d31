"""The Overseer API (overseer.dev/v1alpha1): the only definition of each kind's spec and status."""

from .agent import (Agent, AgentBudget, AgentSpec, AgentStatus, Budget, KnowledgeSpec, ModelSpec, ResourceRequirements,
                    WorkspaceSpec)
from .capability import Capability, CapabilitySpec, CapabilityStatus, EgressRule
from .goal import Goal, GoalSpec, GoalStatus, GoalWorkspace, Phase, TokenUsage, WorkspaceSource, queue_key
from .meta import API_VERSION, GROUP, VERSION, Condition, parse_duration

KINDS = (Agent, Goal, Capability)

__all__ = [
    "queue_key",
    "API_VERSION", "GROUP", "KINDS", "VERSION",
    "Agent", "AgentBudget", "AgentSpec", "AgentStatus", "Budget", "KnowledgeSpec", "ModelSpec", "ResourceRequirements",
    "WorkspaceSpec", "WorkspaceSource", "GoalWorkspace",
    "Capability", "CapabilitySpec", "CapabilityStatus", "EgressRule",
    "Condition", "Goal", "GoalSpec", "GoalStatus", "Phase", "TokenUsage", "parse_duration",
]
