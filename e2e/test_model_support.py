"""An Agent on a model the SDK lists as deprecated is told so in its conditions."""

from __future__ import annotations

from overseer.operator.agents import deprecated_models

from e2e.world import World


def test_an_agent_on_a_deprecated_model_is_told_its_end_of_life(world: World) -> None:
    model, eol = next(iter(deprecated_models().items()))
    world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: old}}
spec:
  model: {{name: {model}, maxTokens: 1024, apiKeySecretRef: {{name: anthropic, key: api-key}}}}
""")
    cond = world.wait_condition("agent", "old", "ModelSupported", "False", "ModelDeprecated")
    assert model in cond["message"] and eol in cond["message"]
    world.wait_condition("agent", "old", "Ready", "True")  # a warning, not a refusal
    world.agent("current")
    world.wait_condition("agent", "current", "ModelSupported", "True", "ModelCurrent")
