"""Goals worked on by the agent runtime, end to end: the operator dispatches a pod, the agent
process for that pod talks to a scripted model through the real anthropic SDK, and everything
a user sees goes through the real API server."""

from __future__ import annotations

import json
from typing import Any

from e2e.harness import wait_for
from overseer.operator.workspace import claim_name
from e2e.world import World


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"reply": [{"tool_use": {"name": name, "input": args}}]}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"reply": [{"text": value}], **extra}


def test_scripted_goal_reads_edits_and_tests_files(world: World, agents: Any) -> None:
    model, runner = agents({"fix-parser": [
        tool("read_file", path="parser.py"),
        tool("edit_file", path="parser.py", old_string="return a - b", new_string="return a + b"),
        tool("bash", command="python3 test_parser.py"),
        text("Fixed add(): it subtracted. test_parser.py passes."),
    ]}, workspace="{size: 1Gi}")
    ws = runner.claim_folder(claim_name("fix-parser"))  # seeded before the goal, as a prepared volume
    (ws / "parser.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "test_parser.py").write_text("from parser import add\nassert add(2, 3) == 5, add(2, 3)\nprint('ok')\n")
    world.goal("fix-parser", extra="  maxRetries: 0")
    goal = world.wait_phase("fix-parser", "Succeeded", timeout=60)
    st = goal["status"]
    assert "test_parser.py passes" in st["result"]
    assert st["iteration"] == 4 and st["tokens"]["total"] > 0 and st["tokens"]["output"] > 0
    assert "return a + b" in (ws / "parser.py").read_text()
    results = [b for r in model.requests() for m in r["body"]["messages"] if m["role"] == "user"
               for b in (m["content"] if isinstance(m["content"], list) else []) if b.get("type") == "tool_result"]
    assert any("ok" in json.dumps(b["content"]) and not b.get("is_error") for b in results)


def test_high_risk_call_waits_for_approval_and_the_agent_cannot_approve_itself(world: World, agents: Any,
                                                                               kubectl: Any) -> None:
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: deploy}
spec: {description: "Deploy to production", risk: high, command: {run: ["cat"]},
       inputSchema: {type: object, properties: {target: {type: string}}, required: [target]}}
""")
    model, runner = agents({"ship": [tool("deploy", target="prod"), text("Deployed.")]}, capabilities="[deploy]")
    world.goal("ship")
    waiting = world.wait_phase("ship", "AwaitingApproval", timeout=60)
    request = waiting["status"]["pendingApprovals"][0]
    assert "deploy" in request["summary"] and "prod" in request["detail"]
    assert f"overseer.dev/approve={request['id']}" in waiting["status"]["message"]

    pod = waiting["status"]["pod"]
    own = kubectl("--kubeconfig", str(runner.workdir / f"kubeconfig-{pod}"), "annotate", "goal", "ship",
                  "-n", world.ns, f"overseer.dev/approve={request['id']}", check=False)
    assert own.returncode != 0 and "forbidden" in own.stderr.lower(), own.stderr

    kubectl("annotate", "goal", "ship", "-n", world.ns, f"overseer.dev/approve={request['id']}")
    done = world.wait_phase("ship", "Succeeded", timeout=60)
    decision = done["status"]["decisions"][0]
    assert (decision["id"], decision["decision"]) == (request["id"], "approved")
    assert decision["decidedBy"] == "admin" and decision["verified"] is True
    assert "ApprovalRequested" in {e["reason"] for e in world.events("ship")}


def test_a_denied_call_tells_the_model_why(world: World, agents: Any, kubectl: Any) -> None:
    model, runner = agents({"cleanup": [
        tool("bash", command="pip install leftpad"),
        text("Understood, I will not fetch anything."),
    ]}, budget="")
    world.goal("cleanup")
    waiting = world.wait_phase("cleanup", "AwaitingApproval", timeout=60)
    approval = waiting["status"]["pendingApprovals"][0]["id"]
    kubectl("annotate", "goal", "cleanup", "-n", world.ns, f"overseer.dev/deny={approval}",
            "overseer.dev/deny-reason=no network from this agent")
    world.wait_phase("cleanup", "Succeeded", timeout=60)
    last = model.requests()[-1]["body"]["messages"][-1]
    denial = next(b for b in last["content"] if b.get("type") == "tool_result")
    assert denial["is_error"] and "no network from this agent" in json.dumps(denial["content"])
    assert world.get("goal", "cleanup")["status"]["decisions"][0]["decision"] == "denied"


INLINE_CODE = "python3 -c 'open(\"ran.txt\", \"w\").write(\"ran\")'"


def test_inline_code_waits_for_a_person_until_the_agent_allows_code_execution(world: World, agents: Any,
                                                                              kubectl: Any) -> None:
    model, runner = agents({name: [tool("bash", command=INLINE_CODE), text("Done.")] for name in ("gated", "allowed")},
                           workspace="{size: 1Gi}")
    world.goal("gated")
    waiting = world.wait_phase("gated", "AwaitingApproval", timeout=60)
    request = waiting["status"]["pendingApprovals"][0]
    assert request["summary"] == "bash (high risk): python3 -c runs inline code" and request["detail"] == INLINE_CODE
    kubectl("annotate", "goal", "gated", "-n", world.ns, f"overseer.dev/deny={request['id']}")
    world.wait_phase("gated", "Succeeded", timeout=60)
    assert not (runner.claim_folder(claim_name("gated")) / "ran.txt").exists()

    kubectl("patch", "agent", "coder", "-n", world.ns, "--type", "merge", "-p", '{"spec":{"codeExecution":"Allowed"}}')
    world.goal("allowed")
    done = world.wait_phase("allowed", "Succeeded", timeout=60)
    assert not done["status"].get("decisions")
    assert (runner.claim_folder(claim_name("allowed")) / "ran.txt").read_text() == "ran"


def test_steering_reaches_the_running_loop(world: World, agents: Any, kubectl: Any) -> None:
    model, runner = agents({"refactor": [
        tool("bash", command="true"),
        {**tool("bash", command="true"), "delay": 3},
        {**text("Switching to the v2 parser as asked."), "expect": {"last_user_contains": "v2 parser"}},
    ]})
    world.goal("refactor")
    # Steer while the model thinks about its second turn: it must reach the third request.
    wait_for(lambda: (world.get("goal", "refactor")["status"].get("iteration") or 0) >= 1, timeout=60,
             description="first iteration reported")
    kubectl("annotate", "goal", "refactor", "-n", world.ns, "overseer.dev/steer=Use the v2 parser instead")
    done = world.wait_phase("refactor", "Succeeded", timeout=60)
    assert "v2 parser" in done["status"]["result"]
    assert not any("v2 parser" in json.dumps(r["body"]["messages"]) for r in model.requests()[:2])


def test_killed_agent_resumes_from_its_checkpoint_without_repeating_tool_calls(world: World, agents: Any) -> None:
    steps = [{**tool("bash", command=f"echo step-{i} >> steps.txt"), "delay": 0.5} for i in range(1, 5)]
    model, runner = agents({"long": [*steps, text("All four steps done.")]}, workspace="{size: 1Gi}")
    world.goal("long", retries=2)
    ws = runner.claim_folder(claim_name("long"))  # the file checkpoints live in the workspace claim
    uid = world.get("goal", "long")["metadata"]["uid"]
    state = ws / ".overseer" / "checkpoints" / uid / "state.json"
    wait_for(lambda: state.exists() and json.loads(state.read_text())["counters"]["tool_calls"] >= 2, timeout=60,
             description="two tool calls checkpointed")
    first = world.get("goal", "long")["status"]["pod"]
    runner.kill(first)
    done = world.wait_phase("long", "Succeeded", timeout=90)
    assert done["status"]["attempt"] == 2
    assert (ws / "steps.txt").read_text().split() == ["step-1", "step-2", "step-3", "step-4"]
    assert "resuming at iteration" in runner.log(done["status"]["pod"])


def test_budget_exhaustion_fails_the_goal_without_retry(world: World, agents: Any) -> None:
    model, runner = agents({"endless": [tool("bash", command="true")] * 5 + [text("done")]},
                           budget="  budget: {maxIterationsPerGoal: 2}")
    world.goal("endless", retries=2)
    failed = world.wait_phase("endless", "Failed", timeout=60)
    assert world.condition("goal", "endless", "Complete")["reason"] == "BudgetExhausted"
    assert failed["status"]["attempt"] == 1 and failed["status"]["lastExitCode"] == 2
    assert "iteration budget" in failed["status"]["message"]


def test_rate_limit_and_overload_storms_are_survived(world: World, agents: Any) -> None:
    model, runner = agents({"stormy": [
        {"fault": {"status": 429, "retry_after": 1}},
        tool("bash", command="true"),
        tool("bash", command="true"),
        text("Survived."),
    ]}, faults={"every": 2, "status": 529})
    world.goal("stormy")
    done = world.wait_phase("stormy", "Succeeded", timeout=90)
    assert done["status"]["result"] == "Survived."
    statuses = [r["status"] for r in model.requests()]
    assert 429 in statuses and 529 in statuses
