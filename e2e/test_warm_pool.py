"""Warm agent pods (Agent spec.warmPool), end to end: idle pods started before any goal, a goal
that claims one and runs to Succeeded in it, the pool refilling behind it, an idle pod that dies
replaced, the pool going with its Agent, and an operator killed mid-claim leaving neither a goal
with two pods nor a pod claimed by two goals."""

from __future__ import annotations

import json
from typing import Any

from e2e.harness import wait_for
from e2e.world import World
from overseer.api import Goal
from overseer.operator.pods import claim_patch

WARM = "overseer.dev/warm"


def text(value: str) -> dict[str, Any]:
    return {"reply": [{"text": value}]}


def warm_pods(world: World) -> list[dict[str, Any]]:
    return [p for p in world.items("pods", "-l", WARM) if not p["metadata"].get("deletionTimestamp")]


def wait_pool(world: World, runner: Any, size: int, without: set[str] = frozenset(), timeout: float = 90) -> list[str]:
    """The names of `size` idle warm pods (none of `without`), Running with their agent process
    started, once the Agent's status counts them."""
    def full() -> list[str] | None:
        pods = [p for p in warm_pods(world) if p["metadata"]["name"] not in without
                and (p.get("status") or {}).get("phase") == "Running" and p["metadata"]["name"] in runner.processes]
        agent = world.get("agent", "coder") or {}
        if len(pods) == size and (agent.get("status") or {}).get("warmPods") == size:
            return sorted(p["metadata"]["name"] for p in pods)
        return None
    return wait_for(full, timeout=timeout, description=f"{size} idle warm pods of Agent coder")


def owners(pod: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["kind"], o["name"]) for o in pod["metadata"].get("ownerReferences") or []]


def test_a_goal_runs_to_succeeded_in_a_warm_pod_and_the_pool_refills(world: World, agents: Any) -> None:
    model, runner = agents({"hello": [text("Done: said hello.")]}, warm_pool=2)
    idle = wait_pool(world, runner, 2)
    fresh_shape = warm_pods(world)[0]["spec"]

    world.goal("hello", description="Say hello.")
    done = world.wait_phase("hello", "Succeeded", timeout=60)

    pod_name = done["status"]["pod"]
    assert pod_name in idle, f"goal ran in {pod_name}, not one of the warm pods {idle}"
    assert done["status"]["result"].startswith("Done: said hello.")  # written with the pod's own bound token
    pod = world.get("pod", pod_name)
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert (labels["overseer.dev/goal"], labels["overseer.dev/attempt"], labels["overseer.dev/agent"]) == \
        ("hello", "1", "coder")
    assert WARM not in labels
    assert owners(pod) == [("Goal", "hello")]  # goes with its goal now, not with the pool's Agent
    assert pod["spec"]["serviceAccountName"] == "overseer-agent-coder" == fresh_shape["serviceAccountName"]
    policy = world.get("networkpolicy", "overseer-agent-coder")
    assert policy is not None
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()  # same NetworkPolicy
    assert f"pod {pod_name} claimed by goal {world.ns}/hello" in runner.log(pod_name)
    assert model.requests()
    assert [p["metadata"]["name"] for p in world.goal_pods("hello")] == [pod_name]

    refilled = wait_pool(world, runner, 2, without={pod_name})
    assert set(refilled) >= set(idle) - {pod_name}


def test_a_warm_pod_killed_while_idle_is_replaced(world: World, agents: Any) -> None:
    _, runner = agents({}, warm_pool=1)
    [victim] = wait_pool(world, runner, 1)

    runner.kill(victim)  # its container crashes while it waits for a goal

    [replacement] = wait_pool(world, runner, 1, without={victim})
    assert replacement != victim
    wait_for(lambda: world.get("pod", victim) is None, timeout=60, description=f"the dead warm pod {victim} deleted")


def test_deleting_the_agent_deletes_its_warm_pool(world: World, agents: Any) -> None:
    _, runner = agents({}, warm_pool=2)
    wait_pool(world, runner, 2)

    world.kubectl("delete", "-n", world.ns, "agent", "coder")

    wait_for(lambda: not world.items("pods", "-l", WARM), timeout=90,
             description="the warm pods gone with their Agent (owner references)")


def test_an_operator_killed_after_claiming_a_pod_runs_the_goal_there_and_a_pod_is_claimed_once(
        world: World, agents: Any, operator: Any) -> None:
    _, runner = agents({"kept": [text("Done in the claimed pod.")], "second": [text("Done.")]}, warm_pool=2)
    first, _ = wait_pool(world, runner, 2)
    world.op.kill()  # from here on, the operator's last act was the claim below
    world.goal("kept", description="Finish.")
    goal = wait_for(lambda: world.get("goal", "kept"), description="goal kept stored")
    pod = world.get("pod", first)
    assert pod is not None
    patch = claim_patch(pod, Goal.model_validate(goal), 1)

    # The claim as dispatch makes it; the operator died before it wrote the goal's status.
    world.kubectl("patch", "-n", world.ns, "pod", first, "--type", "merge", "-p", json.dumps(patch))
    # A second claim of the same pod from the same cache (another worker, another replica) is refused.
    again = world.kubectl("patch", "-n", world.ns, "pod", first, "--type", "merge", "-p",
                          json.dumps(claim_patch(pod, Goal.model_validate({**goal, "metadata": {
                              **goal["metadata"], "name": "second", "uid": "00000000-0000-0000-0000-000000000002"}}),
                                                 1)), check=False)
    assert again.returncode != 0 and "modified" in again.stderr, again.stderr

    world.op.start()
    done = world.wait_phase("kept", "Succeeded", timeout=60)

    assert done["status"]["pod"] == first and done["status"]["attempt"] == 1
    assert [p["metadata"]["name"] for p in world.goal_pods("kept")] == [first]  # no second pod beside it
    world.goal("second", description="Finish too.")
    second = world.wait_phase("second", "Succeeded", timeout=60)
    assert second["status"]["pod"] != first
    for p in world.items("pods"):
        assert len([o for o in owners(p) if o[0] == "Goal"]) <= 1, p["metadata"]["name"]
    by_goal = {g: [p["metadata"]["name"] for p in world.goal_pods(g)] for g in ("kept", "second")}
    assert by_goal == {"kept": [first], "second": [second["status"]["pod"]]}


def test_a_warm_pool_with_a_workspace_claim_is_refused_naming_the_field(world: World) -> None:
    refused = world.kubectl("apply", "-n", world.ns, "-f", "-", check=False, input="""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {name: pooled}
spec:
  model: {name: claude-sonnet-5-5, apiKeySecretRef: {name: anthropic, key: api-key}}
  workspace: {size: 1Gi}
  warmPool: 2
""")

    assert refused.returncode != 0
    assert "spec.warmPool" in refused.stderr and "Remove spec.workspace or set spec.warmPool to 0" in refused.stderr


def test_an_operator_killed_during_a_burst_of_claims_leaves_one_pod_per_goal(world: World, agents: Any) -> None:
    names = [f"burst-{i}" for i in range(4)]
    _, runner = agents({n: [text(f"Done with {n}.")] for n in names}, warm_pool=3)
    wait_pool(world, runner, 3)
    for n in names:
        world.goal(n, description=f"Finish {n}.")

    world.op.kill()  # wherever dispatch was: before, in or after a claim or a create
    world.op.start()

    for n in names:
        world.wait_phase(n, "Succeeded", timeout=90)
    for n in names:
        pods = world.goal_pods(n)
        assert [p["metadata"]["name"] for p in pods] == [world.get("goal", n)["status"]["pod"]], n
    claims: dict[str, list[str]] = {}
    for p in world.items("pods"):
        for kind, owner in owners(p):
            if kind == "Goal":
                claims.setdefault(p["metadata"]["name"], []).append(owner)
    assert all(len(goals) == 1 for goals in claims.values()), claims
