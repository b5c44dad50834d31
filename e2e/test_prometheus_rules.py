"""The alert rules and the Grafana dashboard the chart ships, checked by the real promtool (no
cluster needed): rules valid and unit-tested, a runbook section per alert, every panel query
valid PromQL, and the chart's PrometheusRule and dashboard ConfigMap carrying exactly these files."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from e2e.chart import OBSERVABILITY_VALUES, key, kustomize, normalized, objects, template
from e2e.prometheus import (DASHBOARD, RULES, RULES_TESTS, RUNBOOKS, alerts, dashboard, measured, panel_queries,
                            promtool)

# What the dashboard must show (docs/grafana.md explains each).
PANELS = {"Goals by phase", "Goals finished per minute", "Queue wait p95", "Approvals waiting",
          "Cost per hour by namespace and agent", "Tokens per second by namespace and agent",
          "Cache-read share of prompt tokens", "Reconcile errors", "Leader"}
ALERTS = {"OverseerGoalStuckPending", "OverseerGoalStuckQueued", "OverseerApprovalWaitingTooLong",
          "OverseerBudgetBurnRateHigh", "OverseerNoLeader", "OverseerReconcileErrors", "OverseerWatchRelistLoop",
          "OverseerAgentHeartbeatLost"}


def test_promtool_accepts_the_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout, out.stdout


def test_every_alert_fires_as_its_unit_tests_say() -> None:
    out = promtool("test", "rules", str(RULES_TESTS))
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == {a["alert"] for a in alerts()} == ALERTS, "every alert has a unit test in which it fires"


def test_every_alert_links_its_runbook_section() -> None:
    headings = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
                for h in re.findall(r"^##+ (.+)$", RUNBOOKS.read_text(), flags=re.M)}
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.endswith("#" + alert["alert"].lower()), url
        assert alert["alert"].lower() in headings, f"docs/runbooks.md has no section {alert['alert']}"
        assert alert["labels"]["severity"] in ("warning", "critical")
        measured(alert["expr"])  # each compares one measure with a threshold (the e2e evaluates the measure)


def test_the_dashboard_is_valid_and_has_every_panel_it_promises(tmp_path: Path) -> None:
    board = dashboard()
    assert board["uid"] == "overseer" and board["schemaVersion"] >= 39
    panels = board["panels"]
    assert PANELS <= {p["title"] for p in panels}
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for a, b in itertools.combinations(panels, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        overlap = (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                   and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"])
        assert not overlap, f"panels {a['title']!r} and {b['title']!r} overlap"
        assert ga["x"] + ga["w"] <= 24
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    # promtool parses each query as PromQL: one recording rule per panel target.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"panel:{i}", "expr": expr} for i, (_, expr) in enumerate(panel_queries())]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(panel_queries())} rules found" in out.stdout, out.stdout + out.stderr


def test_the_chart_ships_these_rules_and_this_dashboard() -> None:
    rendered = objects(template("--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
                                "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true"))
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    [board] = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["data"]["overseer.json"] == DASHBOARD.read_text()
    [monitor] = [o for o in rendered if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    [pods] = [o for o in rendered if o["kind"] == "PodMonitor"]
    assert pods["spec"]["selector"] == {"matchExpressions": [{"key": "overseer.dev/goal", "operator": "Exists"}]}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"  # the goal pod's container port name


def test_manifests_observability_is_the_charts_rendering() -> None:
    built = {key(o): normalized(o) for o in kustomize("observability")}
    chart = {key(o): normalized(o) for o in objects(template(*OBSERVABILITY_VALUES))}
    assert sorted(built) == sorted(chart), "manifests/observability and the chart differ: run make manifests"
    for k in chart:
        assert built[k] == chart[k], f"{k} differs between manifests/observability and the chart: run make manifests"
