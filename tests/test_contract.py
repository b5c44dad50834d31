"""The goal pod contract (overseer.contract) as both sides and the README see it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from overseer.agent.config import AgentSettings
from overseer.agent.loop import Outcome
from overseer.agent.main import exit_code
from overseer.contract import Env, ExitCode
from overseer.operator.pods import render_pod
from overseer.operator.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_environment_table() -> str:
    text = README.read_text()
    section = text.split("### The agent's environment", 1)[1]
    return "\n".join(line for line in section.splitlines()[1:] if line.startswith("|"))


def pod_environment(pod: dict[str, Any], secret: str = "sk-test") -> dict[str, str]:
    """The environment the kubelet would give the agent container: fieldRefs and the API key
    Secret resolved."""
    container, _tools = pod["spec"]["containers"]
    fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"]}
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = secret
    return env


def test_the_readme_table_lists_exactly_the_variables_of_the_contract() -> None:
    listed = set(re.findall(r"`((?:OVERSEER|ANTHROPIC)_[A-Z_]+)`", readme_environment_table()))

    assert listed == {e.value for e in Env}, "README.md, 'The agent's environment', differs from overseer.contract.Env"


def test_the_defaults_in_the_readme_table_are_the_agents() -> None:
    stated = re.findall(r"`(OVERSEER_[A-Z_]+)` \(([\d.]+)\)", readme_environment_table())
    defaults = {field.validation_alias: field.default for field in AgentSettings.model_fields.values()}

    assert stated, "the README states the tuning defaults in parentheses"
    for name, value in stated:
        assert defaults[name] == type(defaults[name])(value), name


def test_every_variable_the_pod_sets_is_part_of_the_contract(make_goal, make_agent, clean_env) -> None:
    settings = Settings(knowledge_admin_url="postgresql://kb", agent_redis_url="redis://r:6379/0",
                        agent_requests_per_minute=50, agent_tokens_per_minute=40_000)
    agent = make_agent(model={"name": "claude-sonnet-5-5", "baseURL": "http://127.0.0.1:9/",
                              "apiKeySecretRef": {"name": "anthropic", "key": "api-key"}})

    pod = render_pod(make_goal("fix-ci"), agent, 1, settings)

    assert set(pod_environment(pod)) <= {e.value for e in Env}


def test_the_agent_reads_what_the_operator_renders(make_goal, make_agent, clean_env) -> None:
    settings = Settings(knowledge_admin_url="postgresql://kb", agent_redis_url="redis://r:6379/0",
                        agent_requests_per_minute=50, agent_tokens_per_minute=40_000, agent_metrics_port=9100)
    pod = render_pod(make_goal("fix-ci"), make_agent("coder"), 3, settings)
    for name, value in pod_environment(pod).items():
        clean_env.setenv(name, value)

    read = AgentSettings()

    assert (read.goal_name, read.goal_namespace, read.agent_name) == ("fix-ci", pod["metadata"]["namespace"], "coder")
    assert str(read.workspace) == pod["spec"]["containers"][0]["workingDir"]
    assert read.redis_url == "sk-test"  # Redis and the database login come from Secrets (secretKeyRef)
    assert (read.requests_per_minute, read.tokens_per_minute, read.health_port) == (50, 40_000, 9100)


def test_a_missing_variable_is_named_in_the_agents_error(clean_env) -> None:
    clean_env.setenv(Env.GOAL_NAME, "fix-ci")
    clean_env.setenv(Env.GOAL_NAMESPACE, "team-a")

    with pytest.raises(ValueError, match="OVERSEER_AGENT_NAME"):
        AgentSettings()


@pytest.mark.parametrize(("outcome", "code"), [
    (Outcome(success=True, result="done"), ExitCode.SUCCEEDED),
    (Outcome(success=False, result="model unavailable", reason="ModelUnavailable", retryable=True), ExitCode.RETRY),
    (Outcome(success=False, result="budget spent", reason="BudgetExhausted"), ExitCode.GAVE_UP),
])
def test_the_agent_exits_with_the_contracts_codes(outcome: Outcome, code: ExitCode) -> None:
    assert exit_code(outcome) == code
    assert [c.value for c in ExitCode] == [0, 1, 2]


def test_behind_the_gateway_a_goal_pod_gets_no_rate_limit_of_its_own(make_goal, make_agent, clean_env) -> None:
    settings = Settings(gateway_url="http://overseer-gateway.overseer-system:8080", agent_requests_per_minute=50,
                        agent_tokens_per_minute=40_000)
    pod = render_pod(make_goal("fix-ci"), make_agent("coder"), 1, settings)
    for name, value in pod_environment(pod).items():
        clean_env.setenv(name, value)

    read = AgentSettings()

    assert (read.requests_per_minute, read.tokens_per_minute) == (0, 0)  # the gateway limits its calls
