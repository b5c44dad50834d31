"""The model gateway on the local control plane: goal pods' own tokens, reviewed by the real API
server, the gateway running as its own least-privileged ServiceAccount."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

from e2e.agent_runner import ModelServer
from e2e.gateway import GatewayProcess, gateway_kubeconfig, pod_token
from e2e.harness import Cluster, K8s, Kubectl, restricted_pod, wait_for
from e2e.test_agent_runtime import tool
from e2e.world import World
from overseer.agent.tools.subgoal import child_name
from tests.support.servers import PostgresServer

MODEL = "claude-sonnet-5-5"
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ModelServer]:
    server = ModelServer({"conversations": {"default": ["Hello through the gateway."]}, "repeat_last": True},
                         tmp_path)
    yield server
    server.stop()


@pytest.fixture
def budgets_file(tmp_path: Path) -> Path:
    """The platform's namespace budgets the gateway reads (the ConfigMap overseer-gateway-budgets)."""
    path = tmp_path / "budgets.yaml"
    path.write_text("{}\n")
    return path


@pytest.fixture
def gateway(cluster: Cluster, kubectl: Kubectl, k8s: K8s, tmp_path: Path, ledger_db: PostgresServer,
            budgets_file: Path) -> Iterator[GatewayProcess]:
    kubeconfig = gateway_kubeconfig(cluster, kubectl, k8s, tmp_path / "gateway.kubeconfig")
    with GatewayProcess(cluster, kubeconfig, tmp_path / "gateway.log", env={
            "OVERSEER_GATEWAY_DATABASE_URL": ledger_db.dsn, "OVERSEER_GATEWAY_STATUS_INTERVAL_SECONDS": "0.5",
            "OVERSEER_GATEWAY_BUDGETS_FILE": str(budgets_file)}) as gw:
        yield gw


@pytest.fixture
def operator_env(gateway: GatewayProcess) -> dict[str, str]:
    """The operator of this module's tests sends goal pods to the gateway."""
    return {"OVERSEER_GATEWAY_URL": gateway.url}


def ledger(db: PostgresServer, goal_uid: str) -> tuple[float, int, list[str]]:
    """(dollars, calls, goal names) the spend ledger holds for a goal uid."""
    with psycopg.connect(db.dsn) as conn:
        found = conn.execute("SELECT coalesce(sum(cost_usd), 0), count(*), array_agg(DISTINCT goal)"
                             " FROM gateway_spend WHERE goal_uid = %s", (goal_uid,)).fetchone()
    assert found is not None
    return float(found[0]), int(found[1]), list(found[2] or [])


@pytest.fixture
def goal_pods(world: World, model: ModelServer) -> dict[str, str]:
    """Two running goals of one Agent whose model endpoint is the scripted model: goal -> pod."""
    world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: coder}}
spec:
  model: {{name: {MODEL}, baseURL: "{model.url}", apiKeySecretRef: {{name: anthropic, key: api-key}}}}
  maxConcurrentGoals: 2
""")
    world.wait_condition("agent", "coder", "Ready", "True")
    world.goal("fix-ci")
    world.goal("fix-docs")
    return {goal: world.running_pod(goal) for goal in ("fix-ci", "fix-docs")}


def ask(gateway: GatewayProcess, token: str, **extra: Any) -> Any:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=token, max_retries=0)
    return client.messages.create(model=MODEL, max_tokens=50, messages=HELLO, **extra)  # type: ignore[arg-type]


def test_a_goal_pods_token_is_charged_to_its_own_goal_whatever_the_request_says(
        gateway: GatewayProcess, goal_pods: dict[str, str], world: World, k8s: K8s, model: ModelServer,
        ledger_db: PostgresServer) -> None:
    answer = ask(gateway, pod_token(k8s, world.ns, goal_pods["fix-ci"]),
                 metadata={"user_id": f"{world.ns}/fix-docs"})

    assert answer.content[0].text == "Hello through the gateway."
    assert [r["body"]["messages"] for r in model.requests()] == [HELLO]
    fix_ci, fix_docs = (world.get("goal", g)["metadata"]["uid"] for g in ("fix-ci", "fix-docs"))  # type: ignore[index]
    assert wait_for(lambda: ledger(ledger_db, fix_ci)[1] == 1, timeout=60, description="the call in the ledger")
    assert ledger(ledger_db, fix_ci)[2] == ["fix-ci"] and ledger(ledger_db, fix_docs)[1] == 0


def test_tokens_other_than_a_goal_pods_gateway_token_are_refused(
        gateway: GatewayProcess, goal_pods: dict[str, str], world: World, k8s: K8s, model: ModelServer) -> None:
    pod = goal_pods["fix-ci"]
    # The token the agent uses for the Kubernetes API (default audience) is not a gateway token.
    with pytest.raises(anthropic.AuthenticationError, match="audience overseer-gateway"):
        ask(gateway, pod_token(k8s, world.ns, pod, audience=""))
    with pytest.raises(anthropic.AuthenticationError):
        ask(gateway, "sk-ant-api03-not-a-kubernetes-token")
    assert model.requests() == []


def test_a_token_stops_working_with_its_pod(gateway: GatewayProcess, goal_pods: dict[str, str], world: World,
                                            k8s: K8s) -> None:
    pod = goal_pods["fix-docs"]
    token = pod_token(k8s, world.ns, pod)
    world.kubectl("delete", "pod", "-n", world.ns, pod, "--wait=true")

    with pytest.raises(anthropic.AuthenticationError):
        ask(gateway, token)


def test_a_pod_made_to_look_like_a_goal_pod_is_refused(gateway: GatewayProcess, goal_pods: dict[str, str],
                                                       world: World, k8s: K8s, model: ModelServer) -> None:
    # Someone who may create pods runs one as the agent's ServiceAccount, labelled with a goal,
    # hoping to spend that goal's budget: no Goal controls the pod, so the gateway says no.
    forged = restricted_pod("forged", serviceAccountName="overseer-agent-coder")
    forged["metadata"]["labels"] = {"overseer.dev/goal": "fix-ci", "overseer.dev/agent": "coder"}
    k8s.core.create_namespaced_pod(world.ns, forged)

    with pytest.raises(anthropic.PermissionDeniedError, match="not controlled by Goal fix-ci"):
        ask(gateway, pod_token(k8s, world.ns, "forged"))
    assert model.requests() == []


def text(value: str) -> dict[str, Any]:
    return {"reply": [{"text": value}]}


def test_a_goal_runs_through_the_gateway_and_its_cost_in_status_matches_the_ledger(
        world: World, agents: Any, ledger_db: PostgresServer) -> None:
    model, runner = agents({"fix-ci": [text("Looked at it."), text("Done: tests pass.")]})
    world.goal("fix-ci", extra="  maxRetries: 0")
    goal = world.wait_phase("fix-ci", "Succeeded", timeout=90)

    [pod] = world.goal_pods("fix-ci")
    container = pod["spec"]["containers"][0]
    assert "ANTHROPIC_API_KEY" not in {e["name"] for e in container["env"]}
    assert "secretKeyRef" not in repr(pod["spec"]) and "test-key" not in repr(pod)
    usd, calls, _ = ledger(ledger_db, goal["metadata"]["uid"])
    assert calls == len(model.requests()) >= 1 and usd > 0
    cost = wait_for(lambda: (world.get("goal", "fix-ci") or {}).get("status", {}).get("cost"), timeout=60,
                    description="status.cost of goal fix-ci")
    assert (cost["usd"], cost["requests"]) == (round(usd, 6), calls)
    agent_cost = wait_for(lambda: (world.get("agent", "coder") or {}).get("status", {}).get("cost"), timeout=60,
                          description="status.cost of agent coder")
    assert agent_cost["totalUsd"] == agent_cost["todayUsd"] == round(usd, 6)
    header, row = world.kubectl("get", "goal", "fix-ci", "-n", world.ns).stdout.splitlines()
    start = header.index("COST")  # kubectl aligns columns; some cells of this row are empty
    assert float(row[start:].split()[0]) == pytest.approx(usd, rel=1e-3)


def test_a_goal_over_its_money_budget_fails_with_budget_exhausted_and_the_amount(
        world: World, agents: Any) -> None:
    # maxTokens 4096 of output at $10 per million may cost $0.041 (plus the prompt): more than the whole budget.
    model, runner = agents({"tiny": [text("never sent")]}, budget="  budget: {maxCostPerGoal: 0.001}")
    world.goal("tiny", extra="  maxRetries: 2")
    goal = world.wait_phase("tiny", "Failed", timeout=90)

    assert goal["status"]["failureReason"] == "BudgetExhausted"
    assert goal["status"]["attempt"] == 1  # not retried
    assert "budget maxCostPerGoal $0.0010 of Goal" in goal["status"]["message"]
    estimate = re.search(r"this call may cost up to \$(\d+\.\d+)", goal["status"]["message"])
    assert estimate and float(estimate.group(1)) >= 4096 * 10 / 1e6, goal["status"]["message"]
    assert model.requests() == []


def test_a_parent_whose_sub_goal_spent_its_budget_fails_with_budget_exhausted_and_its_cost_includes_it(
        world: World, agents: Any, ledger_db: PostgresServer) -> None:
    # Each call holds its prompt (~2,400 tokens) + maxTokens 4,096. The parent's first call and the
    # sub-goal's one call fit the parent's 12,000 tokens; the sub-goal's long answer (~5,000 tokens)
    # leaves too little for the parent's next call, which its own spend alone (~2,500) would allow.
    child = child_name("release", "Write the release notes.", "coder")
    model, runner = agents({
        "release": [tool("spawn_subgoal", description="Write the release notes.", max_tokens=8000),
                    text("never sent")],
        child: [text("Release notes: " + "the parser handles tabs now. " * 700)],
    })
    world.goal("release", description="Release the parser fix.", extra="  budget: {maxTokensPerGoal: 12000}")
    parent = world.wait_phase("release", "Failed", timeout=120)
    sub = world.get("goal", child)

    assert sub["status"]["phase"] == "Succeeded"
    assert parent["status"]["failureReason"] == "BudgetExhausted"
    assert f"budget maxTokensPerGoal 12000 of Goal {world.ns}/release is exhausted" in parent["status"]["message"]
    assert [r["conversation"] for r in model.requests()] == [f"{world.ns}/release", f"{world.ns}/{child}"]
    usd, calls, _ = ledger(ledger_db, parent["metadata"]["uid"])  # the parent's own row
    sub_usd, _, _ = ledger(ledger_db, sub["metadata"]["uid"])
    cost = wait_for(lambda: ((c := (world.get("goal", "release") or {}).get("status", {}).get("cost") or {})
                             .get("requests") == 2 and c), timeout=60, description="the parent's cost with its sub-goal's")
    assert calls == 1 and (cost["ownUsd"], cost["usd"]) == (round(usd, 6), round(usd + sub_usd, 6))


def test_a_goal_over_its_agents_daily_budget_fails_with_budget_exhausted_and_the_amount(
        world: World, agents: Any) -> None:
    model, runner = agents({"tiny": [text("never sent")]}, budget="  budget: {maxCostPerDay: 0.001}")
    world.goal("tiny", extra="  maxRetries: 2")
    goal = world.wait_phase("tiny", "Failed", timeout=90)

    assert goal["status"]["failureReason"] == "BudgetExhausted" and goal["status"]["attempt"] == 1
    assert re.search(rf"budget maxCostPerDay \$0\.0010 of Agent {world.ns}/coder for \d{{4}}-\d\d-\d\d \(UTC\) is "
                     r"exhausted: \$0\.0000 spent, \$0\.0000 held by calls in flight, and this call may cost up to "
                     r"\$\d+\.\d{4}", goal["status"]["message"]), goal["status"]["message"]
    estimate = re.search(r"may cost up to \$(\d+\.\d+)", goal["status"]["message"])
    assert estimate and float(estimate.group(1)) >= 4096 * 10 / 1e6  # maxTokens of output at $10 per million
    assert model.requests() == []


def test_a_goal_over_its_namespaces_daily_budget_fails_naming_the_platforms_budget(
        world: World, agents: Any, budgets_file: Path) -> None:
    budgets_file.write_text(f"namespaces:\n  {world.ns}: {{maxTokensPerDay: 2000}}\n")
    model, runner = agents({"big": [text("never sent")]})  # maxTokens 4096 per call: more than the namespace's day
    world.goal("big", extra="  maxRetries: 0")
    goal = world.wait_phase("big", "Failed", timeout=90)

    assert goal["status"]["failureReason"] == "BudgetExhausted"
    assert re.search(rf"budget maxTokensPerDay 2000 of namespace {world.ns} for \d{{4}}-\d\d-\d\d \(UTC; ConfigMap "
                     r"overseer-gateway-budgets\) is exhausted: 0 tokens spent, 0 held by calls in flight, and this "
                     r"call may use up to \d+", goal["status"]["message"]), goal["status"]["message"]
    estimate = re.search(r"may use up to (\d+)", goal["status"]["message"])
    assert estimate and int(estimate.group(1)) >= 4096
    assert model.requests() == []


def test_over_the_agents_rate_limit_a_call_gets_429_with_retry_after_then_goes_through(
        cluster: Cluster, kubectl: Kubectl, k8s: K8s, tmp_path: Path, ledger_db: PostgresServer,
        goal_pods: dict[str, str], world: World, model: ModelServer) -> None:
    kubeconfig = gateway_kubeconfig(cluster, kubectl, k8s, tmp_path / "limited.kubeconfig")
    with GatewayProcess(cluster, kubeconfig, tmp_path / "limited.log", env={
            "OVERSEER_GATEWAY_DATABASE_URL": ledger_db.dsn, "OVERSEER_GATEWAY_AGENT_REQUESTS_PER_MINUTE": "2",
            "OVERSEER_GATEWAY_RATE_LIMIT_WINDOW_SECONDS": "3", "OVERSEER_GATEWAY_RATE_LIMIT_WAIT_SECONDS": "0",
            "OVERSEER_GATEWAY_RATE_LIMIT_REPLICAS": "1"}) as gw:  # one replica, no Redis: the whole limit is its own
        # Two goals of one Agent share its limit: two calls in the window, the third is told when to come back.
        ask(gw, pod_token(k8s, world.ns, goal_pods["fix-ci"]))
        ask(gw, pod_token(k8s, world.ns, goal_pods["fix-docs"]))
        token = pod_token(k8s, world.ns, goal_pods["fix-ci"])
        with pytest.raises(anthropic.RateLimitError, match=f"rate limit of Agent {world.ns}/coder") as limited:
            ask(gw, token)
        calls = len(model.requests())
        client = anthropic.Anthropic(base_url=gw.url, api_key=token, max_retries=3)  # as the agent's SDK does
        answer = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)  # type: ignore[arg-type]

    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 3
    assert calls == 2 and len(model.requests()) == 3
    assert answer.content[0].text == "Hello through the gateway."


def test_an_agent_whose_model_has_no_price_says_so_in_a_condition_and_an_event(world: World) -> None:
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {name: unpriced}
spec:
  model: {name: claude-unreleased-9, apiKeySecretRef: {name: anthropic, key: api-key}}
""")
    condition = world.wait_condition("agent", "unpriced", "PriceKnown", "False", "NoPrice")

    assert "'claude-unreleased-9' has no price" in condition["message"]
    assert "add the key 'claude-unreleased-9' to ConfigMap overseer-gateway-prices" in condition["message"]
    assert wait_for(lambda: any(e.get("reason") == "NoPrice" for e in world.events("unpriced")), timeout=30,
                    description="a NoPrice event on Agent unpriced")
    world.wait_condition("agent", "unpriced", "Ready", "True")  # it still runs goals, at $0 in the ledger
