"""charts/overseer stays in step with the code: its CRD templates are crds/ (generated, never
a second hand-kept copy), every operator setting is a value, and its defaults pass its schema."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from overseer.api.crd import render_chart_templates
from overseer.operator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "overseer"
TEMPLATES = CHART / "templates" / "crds"


def test_chart_crd_templates_are_up_to_date() -> None:
    expected = render_chart_templates()
    stale = [name for name, text in expected.items()
             if not (TEMPLATES / name).is_file() or (TEMPLATES / name).read_text(encoding="utf-8") != text]
    assert not stale, f"charts/overseer/templates/crds is out of date ({', '.join(stale)}): run `make chart-crds`"
    extra = sorted(p.name for p in TEMPLATES.iterdir() if p.name not in expected)
    assert not extra, f"charts/overseer/templates/crds holds files no model renders: {extra}"


def test_chart_crds_are_the_crds_of_crds_dir() -> None:
    for name, text in render_chart_templates().items():
        body = re.sub(r"\{\{- /\*.*?\*/\}\}\n", "", text, flags=re.S)  # the generated-file comment
        plain = yaml.safe_load("\n".join(line for line in body.splitlines() if "{{" not in line))
        source = yaml.safe_load((REPO / "crds" / name).read_text())
        assert plain["spec"] == source["spec"] and plain["metadata"]["name"] == source["metadata"]["name"]
        assert body.startswith("{{- if .Values.crds.enabled }}\n") and body.endswith("{{- end }}\n")
        assert "helm.sh/resource-policy: keep" in text and "if .Values.crds.keep" in text


def test_every_operator_setting_is_a_chart_value() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    missing = [f"OVERSEER_{field.upper()}" for field in Settings.model_fields
               if f"name: OVERSEER_{field.upper()}," not in deployment
               and f"name: OVERSEER_{field.upper()}\n" not in deployment]
    assert not missing, f"settings the chart cannot set: {missing}"


def test_connection_strings_only_come_from_secrets() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    for var in ("OVERSEER_KNOWLEDGE_ADMIN_URL", "OVERSEER_AGENT_REDIS_URL"):
        block = deployment.split(f"name: {var}", 1)[1].split("- name:", 1)[0]
        assert "secretKeyRef" in block and "value:" not in block.split("valueFrom")[0], var


def test_default_values_pass_the_schema_and_app_version_is_the_package_version() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(values)]
    assert not errors
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == chart["version"] == version
    agent = values["image"]["agent"]
    assert f"{agent['repository']}:{agent['tag'] or chart['appVersion']}" == Settings().agent_image


def test_default_values_match_the_operator_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    s = Settings()
    camel = lambda name: re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)  # noqa: E731
    for field in ("workers", "resync_seconds", "retry_backoff_seconds", "retry_backoff_max_seconds",
                  "heartbeat_timeout_seconds", "secret_recheck_seconds", "mcp_probe_timeout_seconds",
                  "mcp_probe_retry_seconds"):
        assert values["config"][camel(field)] == getattr(s, field), field
    np = values["networkPolicy"]
    assert np["modelEgress"] == {"cidrs": s.model_egress_cidrs, "except": s.model_egress_except,
                                 "ports": s.model_egress_ports}
    assert np["apiServer"] == {"cidrs": s.api_server_cidrs, "ports": s.api_server_ports}
    assert np["dns"] == {"namespace": s.dns_namespace, "podLabels": s.dns_pod_labels}
    assert np["knowledgeBase"] == s.knowledge_egress.model_dump(by_alias=True)
    assert np["redis"] == s.redis_egress.model_dump(by_alias=True)
    assert (values["metrics"]["monitoringNamespace"], values["metrics"]["monitoringPodLabels"]) == (
        s.monitoring_namespace, s.monitoring_pod_labels)
    le = values["leaderElection"]
    assert (le["leaseDurationSeconds"], le["renewDeadlineSeconds"], le["retryPeriodSeconds"]) == (
        s.lease_duration_seconds, s.lease_renew_deadline_seconds, s.lease_retry_period_seconds)
    assert values["agents"] == {"requestsPerMinute": s.agent_requests_per_minute,
                                "tokensPerMinute": s.agent_tokens_per_minute, "metricsPort": s.agent_metrics_port}
