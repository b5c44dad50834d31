"""Smoke runs of the benchmarks (make bench-smoke): small sizes, so they keep working. They
check that every figure is produced, never that a timing is met: timings belong to
docs/performance.md, measured on a quiet machine."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import harness
from e2e.harness import Cluster

pytestmark = pytest.mark.slow  # minutes of load each: make test-full, make bench-smoke


def run_bench(cluster: Cluster, module: str, *args: str, timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=harness.REPO, env=cluster.env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_dispatch_benchmark_reports_every_contender_and_the_steady_rate(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "dispatch.json"
    table = run_bench(cluster, "e2e.bench.dispatch", "--goals", "100", "--steady", "10:5", "--json", str(out))
    results = json.loads(out.read_text())["results"]
    burst = {r["contender"]: r for r in results if not r["rate"]}
    assert set(burst) == {"direct", "baseline", "overseer"}
    for r in burst.values():
        assert r["pods"] == 100 and r["all_pods_s"] > 0
        assert r["latency_observed_s"]["p99"] is not None
    for name in ("baseline", "overseer"):
        r = burst[name]
        assert r["running"] == 100 and r["all_running_s"] > 0
        assert r["cpu_s"] > 0 and r["rss_peak_kb"] > 0
        # every goal costs its controller at least the pod and the status write
        assert r["controller_writes"] >= 200
    assert burst["baseline"]["controller_own_count"], "the baseline's own count of its writes"
    steady = [r for r in results if r["rate"]]
    assert {r["contender"] for r in steady} == {"baseline", "overseer"}
    assert all(r["pods"] == 50 and r["latency_observed_s"]["p99"] is not None for r in steady)
    assert "overseer / baseline" in table and "steady rate" in table


def test_the_controller_runtime_contender_makes_exactly_the_baselines_writes(cluster: Cluster, tmp_path: Path) -> None:
    """The Go contender (e2e/tools/crbench, built on demand) is a fair floor only if it does what
    the baseline does: one pod create and one status patch per goal, as the API server counts them."""
    out = tmp_path / "dispatch.json"
    table = run_bench(cluster, "e2e.bench.dispatch", "--goals", "50", "--contenders", "baseline,controller-runtime",
                      "--json", str(out))
    burst = {r["contender"]: r for r in json.loads(out.read_text())["results"]}
    assert set(burst) == {"baseline", "controller-runtime"}
    for r in burst.values():
        assert r["pods"] == 50 and r["running"] == 50, r["contender"]
        assert r["controller_writes"] == 100, (r["contender"], r["writes"])
        assert r["controller_own_count"] == {"POST pods": 50, "PATCH goals/status": 50}, r["contender"]
        assert r["cpu_s"] > 0 and r["rss_peak_kb"] > 0
    assert "controller-runtime (Go)" in table


def test_scale_benchmark_reports_memory_at_rest_and_through_a_short_soak(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    table = run_bench(cluster, "e2e.bench.scale", "--goals", "300", "--agents", "10", "--slots", "5",
                      "--soak", "40", "--churn", "5", "--json", str(out))
    r = json.loads(out.read_text())["result"]
    assert r["placed_s"] > 0 and r["rss_empty_mb"] > 0 and r["rss_rest_mb"] > 0
    assert len(r["samples"]) >= 4, "an RSS sample every 10 s of the soak"
    assert r["finished"] > 0, "goals finished, were deleted and replaced during the soak"
    assert "RSS at rest" in table


def test_loop_benchmark_reports_overhead_checkpoints_and_cache(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "loop.json"
    table = run_bench(cluster, "e2e.bench.loop", "--quick", "--json", str(out))
    raw = json.loads(out.read_text())
    assert raw["overhead"] and all(runs for runs in raw["overhead"].values()), "both set-ups ran"
    assert raw["checkpoints"] and all(raw["checkpoints"].values()), "checkpoint saves per history length"
    assert raw["goals"], "whole scripted goals for the cache share"
    assert "Loop overhead per iteration" in table and "cache share" in table


def test_knowledge_benchmark_reports_lessons_checkpoints_and_the_plans_inside_the_lessons_function(
        cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "knowledge.json"
    table = run_bench(cluster, "e2e.bench.knowledge", "--experiences", "5000", "--queries", "20", "--goals", "3",
                      "--json", str(out))
    r = json.loads(out.read_text())
    assert set(r["lessons"]) == {"bench", "small"}
    for name, lookups in r["lessons"].items():
        assert len(lookups["times"]) == 20 and lookups["found"] > 0, name
    assert {name: len(saves) for name, saves in r["checkpoints"].items()} == {"owner": 9, "bench": 9}
    assert "row-level security" in table
    for who, case in itertools.product(("bench", "small"), ("common", "rare")):  # auto_explain, ANALYZE, BUFFERS
        plan = r["plans"][who][case]
        assert "on experiences e" in plan["plan"] and "Buffers: shared" in plan["plan"], (who, case)
        assert plan["time"].endswith(" ms"), (who, case)
    # a namespace's login reaches the rare words through the text-search index
    assert "Bitmap Index Scan on experiences_search" in r["plans"]["bench"]["rare"]["plan"]
    for case in ("common", "rare"):
        assert r["plans"]["bench"][case]["plan"] in table, case


def test_gateway_benchmark_reports_added_latency_cpu_and_memory(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    table = run_bench(cluster, "e2e.bench.gateway", "--requests", "200", "--concurrency", "50",
                      "--first-token", "0.05", "--event-interval", "0.01", "--json", str(out))
    r = json.loads(out.read_text())
    for path in ("direct", "gateway"):
        # the model's pace shows on both paths: the first event after 50 ms, eight more 10 ms apart
        assert r[path]["ttfb_p50_ms"] >= 50 and r[path]["p50_ms"] >= 50 + 8 * 10
        assert r[path]["p99_ms"] >= r[path]["p50_ms"]
    assert r["gateway_cpu_ms_per_request"] > 0 and r["gateway_rss_mb"] > 0
    assert r["gateway_cpu_wait_ms_per_request"] >= 0
    assert "added by the gateway" in table


def test_start_benchmark_times_every_step_of_a_goal_and_the_operator_start(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "start.json"
    table = run_bench(cluster, "e2e.bench.start", "--goals", "3", "--json", str(out))
    r = json.loads(out.read_text())["result"]
    assert len(r["starts"]) == 3
    for s in r["starts"]:
        moments = [s["apply"], s["pod_created"], s["process_started"], s["loaded"], s["first_request"]]
        assert None not in moments and moments == sorted(moments), f"every step, in order: {s}"
        assert s["agent_cpu_s"] > 0
    assert r["operator_caches_s"] > 0 and r["operator_caches_cpu_s"] > 0 and r["operator_rss_idle_mb"] > 0
    assert set(r["imports_cpu_s"]) == {"pass", "import overseer.agent.main", "import overseer.operator.main"}
    assert "apply → first model request" in table and "caches filled" in table


def test_start_benchmark_with_a_warm_pool_times_claimed_goals_and_the_memory_of_an_idle_pod(
        cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "start-warm.json"
    table = run_bench(cluster, "e2e.bench.start", "--goals", "3", "--warm-pool", "1", "--json", str(out))
    r = json.loads(out.read_text())["result"]
    assert len(r["starts"]) == 3
    for s in r["starts"]:
        moments = [s["apply"], s["claimed"], s["loaded"], s["first_request"]]
        assert s["warm"] and None not in moments and moments == sorted(moments), f"every step, in order: {s}"
    [(agent_mb, tools_mb)] = r["warm_rss_mb"]
    assert agent_mb > 10 and tools_mb > 1
    assert "claimed by the goal" in table and "an idle warm pod holds" in table
