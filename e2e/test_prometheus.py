"""A real Prometheus scrapes the operator, the goal pods and the model gateway while goals run
through the gateway; then every dashboard panel's query and every alert's measure must return
series (an empty panel is a failing test), and every /metrics endpoint passes
`promtool check metrics`."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.operator.workspace import claim_name
from e2e.agent_runner import AgentRunner
from e2e.gateway import GatewayProcess, gateway_kubeconfig
from e2e.harness import Cluster, K8s, Kubectl, free_port, http_get, wait_for
from e2e.prometheus import RULES, PrometheusServer, alerts, measured, panel_queries, promtool
from e2e.world import FAST, World
from tests.support.servers import PostgresServer

SCRAPE = "1s"
NOTES = "Release notes of the parser, one line per change since 1.0.\n" * 150  # ~2,300 tokens: cached


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"reply": [{"tool_use": {"name": name, "input": args}}], "delay": 1.5}


def text(value: str) -> dict[str, Any]:
    return {"reply": [{"text": value}], "delay": 1.5}


# The model is overloaded once for longer than the SDK retries (1 + 4 attempts): the agent sees
# one error, waits, and its next call gets the answer.
OVERLOADED = [{"fault": {"status": 529, "retry_after": 0.01}}] * 5


@pytest.fixture
def gateway(cluster: Cluster, kubectl: Kubectl, k8s: K8s, tmp_path: Path,
            ledger_db: PostgresServer) -> Iterator[GatewayProcess]:
    kubeconfig = gateway_kubeconfig(cluster, kubectl, k8s, tmp_path / "gateway.kubeconfig")
    with GatewayProcess(cluster, kubeconfig, tmp_path / "gateway.log",
                        env={"OVERSEER_GATEWAY_DATABASE_URL": ledger_db.dsn}) as gw:
        yield gw


@pytest.fixture
def operator_env(gateway: GatewayProcess) -> dict[str, str]:
    return {"OVERSEER_GATEWAY_URL": gateway.url}


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def world(namespace: str, kubectl: Kubectl, crds: Any, admission_policies: Any, operator: Any, exit_pod: Any,
          operator_env: dict[str, str], metrics_port: int) -> World:
    """The usual world, its operator serving /metrics."""
    op = operator.start(namespace, "--metrics-port", str(metrics_port), env={**FAST, **operator_env})
    w = World(namespace, kubectl, op, exit_pod)
    w.secret()
    return w


class AgentTargets:
    """Prometheus's file_sd of the goal pods' /metrics, kept current as agent processes come and
    go (what a PodMonitor does in a cluster); remembers each one's last /metrics text."""

    def __init__(self, runner: AgentRunner, path: Path, namespace: str) -> None:
        self.runner, self.path, self.namespace = runner, path, namespace
        self.texts: dict[str, str] = {}
        self._stop = threading.Event()
        self._write([])
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _write(self, groups: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.path)

    def _follow(self) -> None:
        written: list[dict[str, Any]] = []
        while not self._stop.wait(0.2):
            live = [p for p in list(self.runner.processes.values()) if p.proc.poll() is None and p.port]
            groups = [{"targets": [f"127.0.0.1:{p.port}"], "labels": {"namespace": self.namespace, "pod": p.pod}}
                      for p in live]
            if groups != written:
                self._write(groups)
                written = groups
            for p in live:
                status, body = http_get(f"http://127.0.0.1:{p.port}/metrics")
                if status == 200 and "overseer_agent_tool_calls_total{" in body:
                    self.texts[p.pod] = body

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_every_panel_and_alert_has_series_from_a_real_prometheus(
        world: World, agents: Any, gateway: GatewayProcess, metrics_port: int, tmp_path: Path) -> None:
    notes = {"path": "NOTES.txt"}
    model, runner = agents({
        "survey": [tool("read_file", **notes), *OVERLOADED, tool("bash", command="echo checked"),
                   text("Read the notes; nothing to change.")],
        "tidy": [tool("read_file", **notes), tool("read_file", **notes), text("The notes are tidy.")],
        # holds the only slot of agent solo while the goal behind it waits Queued
        "hold": [{"reply": [{"text": "Still thinking."}], "delay": 600}],
    }, workspace="{size: 1Gi}")
    for goal in ("survey", "tidy"):  # seeded before the goals, as prepared volumes
        (runner.claim_folder(claim_name(goal)) / "NOTES.txt").write_text(NOTES)
    world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: solo}}
spec:
  model: {{name: claude-sonnet-5-5, baseURL: "{model.url}", apiKeySecretRef: {{name: anthropic, key: api-key}}}}
  maxConcurrentGoals: 1
""")
    world.wait_condition("agent", "solo", "Ready", "True")

    targets = AgentTargets(runner, tmp_path / "agents.json", world.ns)
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "overseer-operator", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
            {"job_name": "overseer-gateway",
             "static_configs": [{"targets": [gateway.metrics_url.split("/")[2]]}]},
            {"job_name": "overseer-goal-pods", "file_sd_configs": [{"files": [str(targets.path)]}]},
        ],
    }
    try:
        with PrometheusServer(config, tmp_path / "prometheus") as prom:
            world.goal("survey", extra="  maxRetries: 0")
            world.goal("tidy", extra="  maxRetries: 0")
            world.goal("hold", agent="solo")
            world.wait_phase("hold", "Running", timeout=60)
            world.goal("behind", agent="solo")
            world.goal("orphan", agent="nobody")  # stays Pending: no such Agent
            world.wait_phase("behind", "Queued")
            for goal in ("survey", "tidy"):
                world.wait_phase(goal, "Succeeded", timeout=120)

            rules = prom.api("rules")["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} == {a["alert"] for a in alerts()}
            assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules

            # The goal pods are gone: their series end, but a rate over the last minute still
            # sees them. Every query must return series, so ask while that holds.
            queries = [*panel_queries(), *((f"alert {a['alert']}", measured(a["expr"])) for a in alerts())]

            def empty() -> list[str]:
                return [f"{title}: {expr}" for title, expr in queries if not prom.query(expr)]
            missing = empty()
            if missing:
                wait_for(lambda: not empty(), timeout=20, description=f"series for {missing}")
            share = prom.query('sum(rate(overseer_gateway_tokens_total{kind="cache_read"}[1m]))')
            assert float(share[0]["value"][1]) > 0, "the second read of NOTES.txt came from the prompt cache"
            errors = prom.query("sum by (status) (rate(overseer_agent_model_call_errors_total[1m]))")
            assert [e["metric"]["status"] for e in errors] == ["529"], \
                prom.api("query", query="overseer_agent_model_call_errors_total[5m]")
    finally:
        targets.stop()

    assert targets.texts, "no goal pod's /metrics was read while it ran"
    endpoints = {"operator": f"http://127.0.0.1:{metrics_port}/metrics",
                 "gateway": gateway.metrics_url}
    texts = {name: wait_for(lambda url=url: (r := http_get(url))[0] == 200 and r[1], description=f"{name} /metrics")
             for name, url in endpoints.items()}
    texts.update({f"goal pod {pod}": body for pod, body in targets.texts.items()})
    for name, body in texts.items():
        out = promtool("check", "metrics", stdin=body, check=False)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), \
            f"promtool check metrics on the {name}'s /metrics:\n{out.stdout}{out.stderr}"
