"""Two gateway replicas behind one Service, sharing the spend ledger (PostgreSQL) and the budget
counters (Redis), as the chart runs them: one budget holds across both, and when one replica is
killed the calls it was answering are retried onto the other."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

from e2e.agent_runner import ModelServer
from e2e.gateway import GatewayProcess, Service, gateway_kubeconfig, pod_token
from e2e.harness import Cluster, K8s, Kubectl, wait_for
from e2e.world import World
from overseer.gateway.budget import BYTES_PER_TOKEN
from overseer.prices import PriceTable
from tests.support.servers import PostgresServer, RedisServer

MODEL = "claude-sonnet-5-5"
GOALS = 20


@pytest.fixture(scope="module")
def redis_counters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def replicas(cluster: Cluster, kubectl: Kubectl, k8s: K8s, tmp_path: Path, ledger_db: PostgresServer,
             redis_counters: RedisServer) -> Iterator[list[GatewayProcess]]:
    kubeconfig = gateway_kubeconfig(cluster, kubectl, k8s, tmp_path / "gateway.kubeconfig")
    env = {"OVERSEER_GATEWAY_DATABASE_URL": ledger_db.dsn, "OVERSEER_GATEWAY_REDIS_URL": redis_counters.url,
           "OVERSEER_GATEWAY_STATUS_INTERVAL_SECONDS": "0.5"}
    started: list[GatewayProcess] = []
    try:
        for n in (1, 2):
            started.append(GatewayProcess(cluster, kubeconfig, tmp_path / f"gateway-{n}.log", env=env))
        yield started
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def service(replicas: list[GatewayProcess]) -> Iterator[Service]:
    front = Service([gateway.url for gateway in replicas])
    yield front
    front.close()


@pytest.fixture
def operator_env(service: Service) -> dict[str, str]:
    """Goal pods of this module's tests call the model through the Service."""
    return {"OVERSEER_GATEWAY_URL": service.url}


def ledger(db: PostgresServer, goal_uid: str) -> tuple[float, int]:
    """(dollars, calls) the spend ledger holds for a goal uid."""
    with psycopg.connect(db.dsn) as conn:
        found = conn.execute("SELECT coalesce(sum(cost_usd), 0), count(*) FROM gateway_spend WHERE goal_uid = %s",
                             (goal_uid,)).fetchone()
    assert found is not None
    return float(found[0]), int(found[1])


def slow_text(value: str, seconds: float) -> dict[str, Any]:
    return {"reply": [{"text": value}], "delay": seconds}


def test_twenty_goals_on_two_replicas_finish_when_one_is_killed_with_calls_in_flight(
        world: World, agents: Any, service: Service, replicas: list[GatewayProcess],
        ledger_db: PostgresServer) -> None:
    names = [f"g{n:02d}" for n in range(GOALS)]
    # Each goal's answer takes 30 s, so the calls of agents that start within that time are in flight together.
    model, runner = agents({name: [slow_text("Done: tests pass.", 30)] for name in names},
                           budget="  budget: {maxCostPerGoal: 0.5}")
    world.kubectl("patch", "agent", "coder", "-n", world.ns, "--type=merge", "-p",
                  json.dumps({"spec": {"maxConcurrentGoals": GOALS}}))
    for name in names:
        world.goal(name)

    # Kill replica one while it holds several calls.
    wait_for(lambda: service.in_flight[0] >= 3, timeout=300, interval=0.05,
             description="three calls in flight on replica one")
    os.kill(replicas[0].proc.pid, signal.SIGKILL)
    replicas[0].proc.wait(timeout=10)
    taken_before = service.connections[1]

    for name in names:
        world.wait_phase(name, "Succeeded", timeout=300)
    assert service.broken[0] >= 3  # those calls were cut off, unanswered...
    assert service.connections[1] > taken_before and service.ready == [1]  # ...and retried on replica two
    assert "Traceback" not in replicas[1].log_text()
    for name in names:
        usd, calls = ledger(ledger_db, world.get("goal", name)["metadata"]["uid"])  # type: ignore[index]
        assert calls >= 1 and 0 < usd <= 0.5


def test_twenty_calls_at_once_on_two_replicas_never_hold_more_than_one_goals_budget(
        world: World, k8s: K8s, service: Service, replicas: list[GatewayProcess], ledger_db: PostgresServer,
        tmp_path: Path) -> None:
    # Each call may cost up to `most` (its worst case, held before it goes out); the goal's budget
    # fits five and a half of them. The model answers after 10 s, so every call is held at once:
    # replicas that each counted alone would let five through each.
    max_tokens, messages = 1000, [{"role": "user", "content": "Why does test_parser fail?"}]
    body = json.dumps({"max_tokens": max_tokens, "messages": messages, "model": MODEL})
    price = PriceTable().price(MODEL)
    assert price is not None
    most = price.most(len(body) // BYTES_PER_TOKEN, max_tokens)
    budget = float(most) * 5.5
    model = ModelServer({"conversations": {"default": [slow_text("Because of tabs.", 10)]}, "repeat_last": True},
                        tmp_path)
    try:
        world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: coder}}
spec:
  model: {{name: {MODEL}, baseURL: "{model.url}", apiKeySecretRef: {{name: anthropic, key: api-key}}}}
---
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {{name: shared}}
spec: {{description: one budget, agentRef: {{name: coder}}, budget: {{maxCostPerGoal: {budget:.6f}}}}}
""")
        token = pod_token(k8s, world.ns, world.running_pod("shared"))
        start = threading.Barrier(GOALS)
        outcomes: list[str] = []

        def call() -> None:
            client = anthropic.Anthropic(base_url=service.url, api_key=token, max_retries=0)  # a connection of its own
            start.wait()
            try:
                client.messages.create(model=MODEL, max_tokens=max_tokens, messages=messages)  # type: ignore[arg-type]
                outcomes.append("answered")
            except anthropic.APIStatusError as e:
                outcomes.append(f"{e.status_code} {e.body['error']['type'] if isinstance(e.body, dict) else e}")

        threads = [threading.Thread(target=call) for _ in range(GOALS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        model.stop()

    assert service.connections[0] >= 5 and service.connections[1] >= 5  # both replicas took calls
    # the other fifteen are held up by the five in flight, not by spend: told to ask again (429), not
    # that the budget is gone (402)
    assert sorted(set(outcomes)) == ["429 rate_limit_error", "answered"]
    assert outcomes.count("answered") == 5
    uid = world.get("goal", "shared")["metadata"]["uid"]  # type: ignore[index]
    spent = wait_for(lambda: (found := ledger(ledger_db, uid))[1] == 5 and found, timeout=30,
                     description="the five answered calls in the ledger")
    assert 0 < spent[0] <= budget
