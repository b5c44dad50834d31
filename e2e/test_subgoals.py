"""Sub-goals end to end: a goal's agent spawns a Goal of its own, the operator dispatches it like
any other, and the parent carries on with its result."""

from __future__ import annotations

import json
from typing import Any

from e2e.harness import wait_for
from e2e.test_agent_runtime import text, tool
from e2e.world import World
from overseer.agent.tools.subgoal import child_name

CHANGELOG = "Write the changelog entry for the parser fix into CHANGELOG.md."


def tool_results(model: Any, conversation: str) -> list[dict[str, Any]]:
    """The tool results the model was sent in one conversation, in order, without repeats."""
    seen: dict[str, dict[str, Any]] = {}
    for request in model.requests():
        if request["conversation"] != conversation:
            continue
        for message in request["body"]["messages"]:
            if message["role"] == "user" and isinstance(message["content"], list):
                for block in message["content"]:
                    if block.get("type") == "tool_result":
                        seen.setdefault(block["tool_use_id"], block)
    return list(seen.values())


CHILD = child_name("release", CHANGELOG, "coder")


def release_spawning_a_changelog(agents: Any, **more: Any) -> tuple[Any, Any]:
    """Goal "release" spawns a sub-goal on its own agent, waits for it and reads its result."""
    others = more.pop("conversations", {})
    return agents({
        "release": [
            tool("spawn_subgoal", description=CHANGELOG, max_tokens=40000),
            {**text("Released; the changelog is written."), "expect": {"last_user_contains": "Changelog updated"}},
        ],
        CHILD: [text("Changelog updated with the parser fix.")],
        **others,
    }, budget="  budget: {maxTokensPerGoal: 100000}", **more)


def test_a_parent_waits_for_its_sub_goal_and_reads_its_result(world: World, agents: Any) -> None:
    child = CHILD
    model, runner = release_spawning_a_changelog(agents)
    world.goal("release", description="Release the parser fix.")

    done = world.wait_phase("release", "Succeeded", timeout=120)
    sub = world.get("goal", child)
    assert sub["status"]["phase"] == "Succeeded"
    assert sub["spec"]["parent"] == "release" and sub["spec"]["agentRef"] == {"name": "coder"}
    assert sub["metadata"]["labels"]["overseer.dev/parent"] == "release"
    assert sub["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    assert 0 < sub["spec"]["budget"]["maxTokensPerGoal"] <= 40000 < 100000
    assert sub["status"]["result"] == "Changelog updated with the parser fix."

    [result] = tool_results(model, f"{world.ns}/release")
    content = json.dumps(result["content"])
    assert not result.get("is_error") and "Succeeded" in content and "Changelog updated" in content
    assert done["status"]["result"] == "Released; the changelog is written."
    assert [g["metadata"]["name"] for g in world.items("goals", "-l", "overseer.dev/parent=release")] == [child]


def test_an_agent_with_one_slot_runs_the_sub_goal_its_waiting_parent_spawned(world: World, agents: Any) -> None:
    """The parent holds the agent's only slot while it waits: the sub-goal runs in that slot, and a
    goal queued behind the parent still waits for it."""
    release_spawning_a_changelog(agents, conversations={"later": [text("Done later.")]}, max_goals=1)
    world.goal("release", description="Release the parser fix.")
    world.wait_phase("release", "Running", timeout=60)
    world.goal("later", description="Something else.")

    world.wait_phase("release", "Succeeded", timeout=120)
    assert world.get("goal", CHILD)["status"]["phase"] == "Succeeded"
    later = world.wait_phase("later", "Succeeded", timeout=120)
    assert later["status"]["startedAt"] >= world.get("goal", "release")["status"]["completedAt"]


def test_a_resumed_parent_finds_the_sub_goal_it_spawned_before(world: World, agents: Any) -> None:
    child = CHILD
    model, runner = agents({
        "release": [tool("spawn_subgoal", description=CHANGELOG), text("Released.")],
        child: [{**text("Changelog updated."), "delay": 4}],
    })
    world.goal("release", description="Release the parser fix.", retries=2)
    wait_for(lambda: world.phase(child) == "Running", timeout=60, description=f"sub-goal {child} running")
    runner.kill(world.get("goal", "release")["status"]["pod"])

    done = world.wait_phase("release", "Succeeded", timeout=120)
    assert done["status"]["attempt"] == 2 and done["status"]["result"] == "Released."
    assert [g["metadata"]["name"] for g in world.items("goals", "-l", "overseer.dev/parent=release")] == [child]
    assert world.get("goal", child)["status"]["attempt"] == 1
    assert "Changelog updated." in json.dumps(tool_results(model, f"{world.ns}/release")[0]["content"])


def test_a_sub_goal_beyond_the_depth_limit_is_refused_to_the_model(world: World, agents: Any) -> None:
    child = child_name("plan", CHANGELOG, "coder")
    grandchild = child_name(child, "Proofread the entry.", "coder")
    model, runner = agents({
        "plan": [tool("spawn_subgoal", description=CHANGELOG), text("Planned.")],
        child: [tool("spawn_subgoal", description="Proofread the entry."),
                {**text("Wrote it myself, unproofread."), "expect": {"last_user_contains": "limit of 1"}}],
    })
    runner.extra_env["OVERSEER_MAX_SUBGOAL_DEPTH"] = "1"
    world.goal("plan", description="Plan the release.")

    world.wait_phase("plan", "Succeeded", timeout=120)
    assert world.get("goal", child)["status"]["result"] == "Wrote it myself, unproofread."
    assert world.get("goal", grandchild) is None
    [refusal] = tool_results(model, f"{world.ns}/{child}")
    assert refusal["is_error"] and "beyond the limit of 1" in json.dumps(refusal["content"])
    [accepted] = tool_results(model, f"{world.ns}/plan")
    assert not accepted.get("is_error") and "Wrote it myself" in json.dumps(accepted["content"])
