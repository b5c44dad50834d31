"""Operator settings come from OVERSEER_* environment variables."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from pydantic import ValidationError

from overseer.operator.settings import Settings


def pyproject_version() -> str:
    return tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["version"]


def test_defaults_need_no_environment(settings):
    assert settings.workers == 16
    assert settings.model_egress_cidrs == []  # no address is open to goal pods unless configured
    assert settings.model_egress_except == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert settings.api_server_cidrs == []


def test_the_default_agent_image_is_the_one_built_from_this_release(settings):
    # `make images` tags overseer/agent with the version in pyproject.toml; the operator must
    # ask for exactly that tag, whatever the version is.
    assert settings.agent_image == f"overseer/agent:{pyproject_version()}"


def test_scalars_come_from_the_environment(clean_env):
    clean_env.setenv("OVERSEER_AGENT_IMAGE", "registry.example.com/overseer/agent:1.2.3")
    clean_env.setenv("OVERSEER_WORKERS", "4")
    clean_env.setenv("OVERSEER_RESYNC_SECONDS", "12.5")
    clean_env.setenv("OVERSEER_DNS_NAMESPACE", "dns")
    clean_env.setenv("OVERSEER_AGENT_METRICS_PORT", "9100")

    settings = Settings()

    assert settings.agent_image == "registry.example.com/overseer/agent:1.2.3"
    assert settings.workers == 4
    assert settings.resync_seconds == 12.5
    assert settings.dns_namespace == "dns"
    assert settings.agent_metrics_port == 9100


def test_lists_come_from_the_environment_as_json(clean_env):
    clean_env.setenv("OVERSEER_MODEL_EGRESS_CIDRS", '["1.2.3.0/24"]')
    clean_env.setenv("OVERSEER_MODEL_EGRESS_EXCEPT", "[]")
    clean_env.setenv("OVERSEER_MODEL_EGRESS_PORTS", "[443, 8443]")
    clean_env.setenv("OVERSEER_API_SERVER_CIDRS", '["10.96.0.1/32", "172.18.0.2/32"]')

    settings = Settings()

    assert settings.model_egress_cidrs == ["1.2.3.0/24"]
    assert settings.model_egress_except == []
    assert settings.model_egress_ports == [443, 8443]
    assert settings.api_server_cidrs == ["10.96.0.1/32", "172.18.0.2/32"]


def test_mappings_come_from_the_environment_as_json(clean_env):
    clean_env.setenv("OVERSEER_DNS_POD_LABELS", '{"k8s-app": "coredns"}')

    assert Settings().dns_pod_labels == {"k8s-app": "coredns"}


def test_a_service_egress_comes_from_the_environment_as_json_in_the_charts_spelling(clean_env):
    clean_env.setenv("OVERSEER_KNOWLEDGE_EGRESS", '{"namespace": "db", "podLabels": {"app": "pg"}, "ports": [5432]}')
    clean_env.setenv("OVERSEER_REDIS_EGRESS", '{"cidrs": ["192.0.2.7/32"], "ports": [6379]}')

    settings = Settings()

    assert (settings.knowledge_egress.namespace, settings.knowledge_egress.pod_labels) == ("db", {"app": "pg"})
    assert settings.redis_egress.cidrs == ["192.0.2.7/32"] and settings.redis_egress.ports == [6379]


@pytest.mark.parametrize("value, says", [
    ('{"namespace": "db", "cidrs": ["192.0.2.0/24"], "ports": [5432]}', "not both"),
    ('{"podLabels": {"app": "pg"}, "ports": [5432]}', "podLabels needs namespace"),
    ('{"namespace": "db", "podLabels": {"app": "pg"}}', "ports: name the service's ports"),
    ('{"cidrs": ["db.example.com"], "ports": [5432]}', "is not a CIDR"),
    ('{"cidr": ["192.0.2.0/24"], "ports": [5432]}', "cidr"),
])
def test_a_bad_service_egress_names_the_setting_and_the_fix(clean_env, value, says):
    clean_env.setenv("OVERSEER_KNOWLEDGE_EGRESS", value)

    with pytest.raises(ValidationError) as error:
        Settings()

    assert "knowledge_egress" in str(error.value) and says in str(error.value)


def test_variable_names_are_not_case_sensitive(clean_env):
    clean_env.setenv("overseer_workers", "3")

    assert Settings().workers == 3


def test_variables_without_the_prefix_are_ignored(clean_env):
    clean_env.setenv("WORKERS", "3")
    clean_env.setenv("AGENT_IMAGE", "elsewhere/agent:9")

    settings = Settings()

    assert settings.workers == 16
    assert settings.agent_image == f"overseer/agent:{version('overseer')}"


@pytest.mark.parametrize(("var", "value"), [
    ("OVERSEER_WORKERS", "0"),
    ("OVERSEER_WORKERS", "many"),
    ("OVERSEER_RESYNC_SECONDS", "0"),
    ("OVERSEER_MODEL_EGRESS_CIDRS", "1.2.3.0/24"),
])
def test_a_bad_value_stops_the_operator_naming_the_setting(clean_env, var, value):
    clean_env.setenv(var, value)

    with pytest.raises((ValidationError, ValueError)) as error:
        Settings()

    assert var.removeprefix("OVERSEER_").lower() in str(error.value).lower()


def test_lease_timings_that_would_let_two_leaders_overlap_are_refused(clean_env):
    clean_env.setenv("OVERSEER_LEASE_DURATION_SECONDS", "8")
    clean_env.setenv("OVERSEER_LEASE_RENEW_DEADLINE_SECONDS", "10")

    with pytest.raises(ValidationError) as error:
        Settings()

    assert "OVERSEER_LEASE_RENEW_DEADLINE_SECONDS < OVERSEER_LEASE_DURATION_SECONDS" in str(error.value)


def test_the_shared_database_login_of_earlier_versions_is_refused_naming_its_replacement(clean_env):
    clean_env.setenv("OVERSEER_AGENT_DATABASE_URL", "postgresql://overseer@db/overseer")

    with pytest.raises(ValidationError) as error:
        Settings()

    assert "OVERSEER_AGENT_DATABASE_URL is no longer read" in str(error.value)
    assert "OVERSEER_KNOWLEDGE_ADMIN_URL" in str(error.value)


def test_the_operator_refuses_a_bad_setting_before_it_starts(clean_env, capsys):
    from overseer.operator.main import main

    clean_env.setenv("OVERSEER_WORKERS", "0")

    assert main(["--namespace", "team-a"]) == 2
    assert "OVERSEER_* environment" in capsys.readouterr().err
