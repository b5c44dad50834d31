"""`kubectl overseer`, run as users run it: the real kubectl finds `kubectl-overseer` on PATH,
against the real API server, with a real Redis that the operator hands to its agents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import Cluster, wait_for
from e2e.test_agent_runtime import text, tool
from e2e.world import World
from tests.integration.conftest import redis_server  # noqa: F401 - the shared Redis server fixture

DEPLOY = """
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: deploy}
spec: {description: "Deploy to production", risk: high, command: {run: ["cat"]},
       inputSchema: {type: object, properties: {target: {type: string}}, required: [target]}}
"""


@pytest.fixture
def operator_env(redis_server: Any) -> dict[str, str]:  # noqa: F811
    return {"OVERSEER_AGENT_REDIS_URL": redis_server.url}


def plugin_dir() -> Path:
    beside = Path(sys.executable).parent
    if (beside / "kubectl-overseer").is_file():
        return beside
    found = shutil.which("kubectl-overseer")
    if found is None:
        pytest.fail("kubectl-overseer is not installed: pip install -e .", pytrace=False)
    return Path(found).parent


@pytest.fixture
def overseer(cluster: Cluster) -> Any:
    """``overseer(*args, env=None, timeout=60) -> CompletedProcess``: ``kubectl overseer ARGS``."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in cluster.env().items() if k != "OVERSEER_REDIS_URL"}
        base["PATH"] = f"{plugin_dir()}{os.pathsep}{base.get('PATH', '')}"
        return subprocess.run([str(cluster.kubectl_path), "overseer", *args], env={**base, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    return proc.stdout


def event_types(logs: str) -> list[str]:
    return [line.split()[1] for line in logs.splitlines()]


def test_status_prints_the_approve_command_and_approve_lets_the_agent_continue(
        world: World, agents: Any, overseer: Any, redis_server: Any) -> None:  # noqa: F811
    world.apply(DEPLOY)
    agents({"ship": [tool("deploy", target="prod"), text("Deployed.")]}, capabilities="[deploy]")
    world.goal("ship")
    waiting = world.wait_phase("ship", "AwaitingApproval", timeout=60)
    approval = waiting["status"]["pendingApprovals"][0]["id"]

    status = ok(overseer("status", "ship", "-n", world.ns))
    assert "AwaitingApproval" in status
    assert f"kubectl overseer approve ship {approval} -n {world.ns}" in status
    assert f"kubectl overseer deny ship {approval} -n {world.ns}" in status

    approved = ok(overseer("approve", "ship", "-n", world.ns))  # the only pending one
    assert approval in approved
    done = world.wait_phase("ship", "Succeeded", timeout=60)
    decision = done["status"]["decisions"][0]
    # The API server's name for the admin kubeconfig's client certificate, not the client's choice.
    assert (decision["id"], decision["decision"], decision["decidedBy"], decision["verified"]) == (
        approval, "approved", "admin", True)

    again = overseer("approve", "ship", "-n", world.ns)
    assert again.returncode == 1 and f"Goal {world.ns}/ship has no pending approvals" in again.stderr

    logs = ok(overseer("logs", "ship", "-n", world.ns, "--from-start", "--redis", redis_server.url))
    assert event_types(logs) == ["turn", "tool_call", "approval_requested", "approval_decided", "tool_result",
                                 "turn", "end"], logs
    assert "deploy target=prod  [high risk" in logs and f"{approval} approved" in logs


def test_deny_with_a_reason_reaches_the_model(world: World, agents: Any, overseer: Any) -> None:
    model, _ = agents({"cleanup": [tool("bash", command="pip install leftpad"),
                                   text("Understood, I will not fetch anything.")]})
    world.goal("cleanup")
    waiting = world.wait_phase("cleanup", "AwaitingApproval", timeout=60)
    approval = waiting["status"]["pendingApprovals"][0]["id"]

    denied = ok(overseer("deny", "cleanup", approval, "-n", world.ns, "--reason", "no network from this agent"))
    assert f"denied {approval}" in denied
    done = world.wait_phase("cleanup", "Succeeded", timeout=60)
    assert done["metadata"]["annotations"]["overseer.dev/deny-reason"] == "no network from this agent"
    decision = done["status"]["decisions"][0]
    assert (decision["decision"], decision["decidedBy"]) == ("denied", "admin")
    last = model.requests()[-1]["body"]["messages"][-1]
    denial = next(b for b in last["content"] if b.get("type") == "tool_result")
    assert denial["is_error"] and "no network from this agent" in json.dumps(denial["content"])


def test_logs_from_start_show_the_turns_and_tool_calls_of_a_finished_goal(
        world: World, agents: Any, overseer: Any, redis_server: Any) -> None:  # noqa: F811
    agents({"hello": [tool("bash", command="echo hello-from-the-agent"),
                      tool("write_file", path="notes.txt", content="done\n"),
                      text("Said hello and took notes.")]})
    world.goal("hello")
    world.wait_phase("hello", "Succeeded", timeout=60)

    # The Redis URL from the environment, as a user would export it once.
    logs = ok(overseer("logs", "hello", "-n", world.ns, "--from-start", env={"OVERSEER_REDIS_URL": redis_server.url}))
    assert event_types(logs) == ["turn", "tool_call", "tool_result", "turn", "tool_call", "tool_result",
                                 "turn", "end"], logs
    lines = logs.splitlines()
    assert "#1 tool_use" in lines[0]
    assert "bash echo hello-from-the-agent" in lines[1] and "bash ok" in lines[2]
    assert "write_file notes.txt" in lines[4]
    assert "#3 end_turn: Said hello and took notes." in lines[6]
    assert "succeeded: Said hello and took notes." in lines[7]

    followed = ok(overseer("logs", "hello", "-n", world.ns, "-f", "--from-start", "--redis", redis_server.url,
                           timeout=30))
    assert followed == logs  # follows to the end event, then stops
    tail = ok(overseer("logs", "hello", "-n", world.ns, "--tail", "2", "--redis", redis_server.url))
    assert event_types(tail) == ["turn", "end"]


def test_steering_through_redis_reaches_the_running_loop(world: World, agents: Any, overseer: Any,
                                                         redis_server: Any) -> None:  # noqa: F811
    model, _ = agents({"refactor": [
        tool("bash", command="true"),
        {**tool("bash", command="true"), "delay": 4},
        {**text("Switching to the v2 parser as asked."), "expect": {"last_user_contains": "v2 parser"}},
    ]})
    world.goal("refactor")
    # Steer while the model thinks about its second turn: it must reach the third request.
    wait_for(lambda: (world.get("goal", "refactor")["status"].get("iteration") or 0) >= 1, timeout=60,
             description="first iteration reported")
    steered = ok(overseer("steer", "refactor", "Use the v2 parser instead", "-n", world.ns,
                          "--redis", redis_server.url))
    assert "steering queued in Redis" in steered
    done = world.wait_phase("refactor", "Succeeded", timeout=60)
    assert "v2 parser" in done["status"]["result"]
    assert "overseer.dev/steer" not in (done["metadata"].get("annotations") or {})
    assert not any("v2 parser" in json.dumps(r["body"]["messages"]) for r in model.requests()[:2])


def test_steering_without_redis_falls_back_to_the_annotation(world: World, overseer: Any) -> None:
    world.goal("waiting", agent="nobody")  # its agent is missing: it stays Pending
    world.wait_phase("waiting", "Pending")

    down = ok(overseer("steer", "waiting", "Prefer small diffs", "-n", world.ns, "--redis", "redis://127.0.0.1:1/0"))
    assert "Redis at redis://127.0.0.1:1/0 did not answer" in down and "overseer.dev/steer annotation" in down
    assert world.get("goal", "waiting")["metadata"]["annotations"]["overseer.dev/steer"] == "Prefer small diffs"

    same = overseer("steer", "waiting", "Prefer small diffs", "-n", world.ns)
    assert same.returncode == 1 and "reads each text once" in same.stderr

    none = ok(overseer("steer", "waiting", "Keep the public API", "-n", world.ns))
    assert "no Redis given" in none
    assert world.get("goal", "waiting")["metadata"]["annotations"]["overseer.dev/steer"] == "Keep the public API"

    logs = overseer("logs", "waiting", "-n", world.ns)
    assert logs.returncode == 0 and "no Redis given" in logs.stderr and "Phase:" in logs.stdout


def test_tree_shows_sub_goals_and_dependencies_with_their_phases(world: World, overseer: Any) -> None:
    world.goal("setup", agent="nobody")
    world.goal("release", agent="nobody", depends="[setup]")
    world.goal("lint", agent="nobody", extra="  parent: release")
    world.goal("lint-fix", agent="nobody", extra="  parent: lint")
    world.goal("elsewhere", agent="nobody")
    phases = {name: wait_for(lambda: world.phase(name), description=f"goal {name} has a phase")
              for name in ("setup", "release", "lint", "lint-fix")}

    tree = ok(overseer("tree", "release", "-n", world.ns)).splitlines()
    assert [line.split()[:3] for line in tree] == [
        ["release", phases["release"]],
        ["├──", "setup", phases["setup"]],
        ["└──", "lint", phases["lint"]],
        ["└──", "lint-fix", phases["lint-fix"]],
    ], tree
    assert "dependency" in tree[1] and "sub-goal" in tree[2] and tree[3].startswith("    └── lint-fix")
    assert "elsewhere" not in "\n".join(tree)


def test_errors_name_the_goal_and_the_kubeconfig_context_sets_the_namespace(
        namespace: str, crds: Any, cluster: Cluster, kubectl: Any, overseer: Any, tmp_path: Path) -> None:
    missing = overseer("status", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f"Goal {namespace}/nope not found" in missing.stderr and f"kubectl get goals -n {namespace}" in missing.stderr

    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    own = tmp_path / "kubeconfig"
    own.write_text(yaml.safe_dump(config))
    kubectl("create", "-n", namespace, "-f", "-", input="""
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {name: here}
spec: {description: "Say hello.", agentRef: {name: coder}}
""")
    # No -n and no $KUBECONFIG: the namespace comes from the context of the --kubeconfig file.
    shown = ok(overseer("status", "here", "--kubeconfig", str(own), env={"KUBECONFIG": ""}))
    assert f"{namespace}/here" in shown

    usage = overseer("approve")
    assert usage.returncode == 1 and "usage: kubectl overseer" in usage.stderr
