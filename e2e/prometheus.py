"""The real Prometheus and promtool (built from their Go module by e2e/tools/prometheus/build.sh)
and what Overseer ships for them: the alert rules and the Grafana dashboard of the chart.

A test starts `PrometheusServer` on a loopback port with a scrape config of its own, loads the
shipped rules into it and asks its HTTP API what each panel and alert would show.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import REPO, _NO_PROXY_OPENER, cache_dir, free_port, http_ok, tail

OBSERVABILITY = REPO / "charts" / "overseer" / "files" / "observability"
RULES = OBSERVABILITY / "prometheus-rules.yaml"
DASHBOARD = OBSERVABILITY / "dashboard.json"
RULES_TESTS = REPO / "e2e" / "prometheus" / "rules-test.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
# What Grafana puts in place of the dashboard's variables when a test runs a panel's query:
# every namespace, and a rate window that spans a few scrapes at the tests' 1 s interval.
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "1m"}


def tool(name: str) -> Path:
    path = cache_dir() / "tools" / "bin" / name
    if not path.exists():
        raise AssertionError(f"{path} not found: run make tools-build")
    return path


def promtool(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(tool("promtool")), *args], capture_output=True, text=True, timeout=120, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"promtool {' '.join(args)} failed with exit code {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")
    return proc


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def measured(expr: str) -> str:
    """An alert's expression without its threshold: what it compares, which has series whenever
    the metrics it reads exist, firing or not."""
    found = re.fullmatch(r"(?s)(.*?)\s*(?:>|<|>=|<=|==|!=)\s*[0-9.e+]+\s*", expr)
    if found is None:
        raise AssertionError(f"alert expression does not end in `<comparison> <threshold>`: {expr}")
    return found.group(1)


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, query) for every target of every panel, with the variables substituted."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"{panel['title']} ({target['refId']})", expr))
    return found


class PrometheusServer:
    """prometheus on a free loopback port with its own TSDB; `.query(expr)` asks its HTTP API."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(tool("prometheus")), f"--config.file={self.config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not http_ok(f"{self.url}/-/ready"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"prometheus did not become ready:\n{tail(self.log.read_text())}")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with _NO_PROXY_OPENER.open(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
