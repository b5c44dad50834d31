"""An agent proposes changes to itself; a person approves them with kubectl; the operator keeps
them in the Agent's ConfigMap; later goals use them until a person reverts them."""

from __future__ import annotations

import json
from typing import Any

from e2e.harness import wait_for
from e2e.world import World

CONFIG_MAP = "overseer-agent-coder-modifications"
LESSON = "Sign every report with OVERSEER-LESSON-42."
WORD_COUNT = ("import json, sys\n"
              "args = json.load(sys.stdin)\n"
              "print(json.dumps({'words': len(args['text'].split())}))\n")
FETCH = "import urllib.request, sys\nprint(urllib.request.urlopen(sys.stdin.read()).read())\n"
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def tool(tool_name: str, **args: Any) -> dict[str, Any]:
    return {"reply": [{"tool_use": {"name": tool_name, "input": args}}]}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"reply": [{"text": value}], **extra}


def self_modification(world: World, goal: str, other_than: str = "") -> dict[str, Any]:
    """The goal's pending selfModification request, once it has one (other than `other_than`)."""
    def pending() -> dict[str, Any] | None:
        requests = (world.get("goal", goal) or {}).get("status", {}).get("pendingApprovals") or []
        return next((r for r in requests if r["kind"] == "selfModification" and r["id"] != other_than), None)
    return wait_for(pending, timeout=60, description=f"a selfModification request of goal {goal}")


def records(world: World) -> dict[str, dict[str, Any]]:
    cm = world.get("configmap", CONFIG_MAP) or {}
    return {key: json.loads(value) for key, value in (cm.get("data") or {}).items()}


def test_approved_self_modifications_reach_later_goals_until_reverted(world: World, agents: Any,
                                                                       kubectl: Any) -> None:
    model, runner = agents({
        "learn": [
            tool("propose_script_tool", name="fetch", description="Fetch a URL", input_schema={"type": "object"},
                 script=FETCH),
            {**tool("propose_lesson", lesson=LESSON), "expect": {"last_user_contains": "network"}},
            tool("propose_script_tool", name="word_count", description="Count the words of a text",
                 input_schema=SCHEMA, script=WORD_COUNT),
            text("Proposed a lesson and a word_count tool."),
        ],
        "use": [
            {**tool("word_count", text="one two three"),
             "expect": {"system_contains": "OVERSEER-LESSON-42", "tools_include": ["word_count"]}},
            {**text("Counted 3 words. OVERSEER-LESSON-42"), "expect": {"last_user_contains": '"words": 3'}},
        ],
        "after-revert": [{**text("Done."), "expect": {"tools_include": ["word_count"]}}],
    })

    # The network script is refused before anyone is asked; the lesson and the tool wait for a person.
    world.goal("learn", description="Learn from this goal.")
    lesson = self_modification(world, "learn")
    assert lesson["id"].startswith("lesson-") and json.loads(lesson["detail"]) == {"kind": "lesson", "lesson": LESSON}
    assert world.wait_phase("learn", "AwaitingApproval", timeout=30)["status"]["message"].endswith(
        f"overseer.dev/approve={lesson['id']} (or overseer.dev/deny={lesson['id']})")
    kubectl("annotate", "goal", "learn", "-n", world.ns, f"overseer.dev/approve={lesson['id']}")
    script_tool = self_modification(world, "learn", other_than=lesson["id"])
    assert script_tool["id"].startswith("tool-word_count-")
    assert json.loads(script_tool["detail"])["tool"]["script"] == WORD_COUNT
    kubectl("annotate", "--overwrite", "goal", "learn", "-n", world.ns, f"overseer.dev/approve={script_tool['id']}")
    learned = world.wait_phase("learn", "Succeeded", timeout=60)
    assert not any("fetch" in json.dumps(r) for r in learned["status"].get("decisions") or [])
    assert [(d["id"], d["decision"], d["decidedBy"]) for d in learned["status"]["decisions"]] == [
        (lesson["id"], "approved", "admin"), (script_tool["id"], "approved", "admin")]

    # Stored in the Agent's own ConfigMap, not in its spec.
    kept = records(world)
    assert set(kept) == {lesson["id"], script_tool["id"]}
    assert kept[lesson["id"]] | {"approvedAt": None} == {
        "id": lesson["id"], "kind": "lesson", "lesson": LESSON, "goal": "learn", "approvedBy": "admin",
        "approvedAt": None, "reverted": False}
    assert kept[script_tool["id"]]["tool"]["name"] == "word_count" and not kept[script_tool["id"]]["reverted"]
    cm = world.get("configmap", CONFIG_MAP)
    assert cm["metadata"]["labels"] == {"overseer.dev/agent": "coder", "app.kubernetes.io/managed-by": "overseer"}
    assert [(o["kind"], o["name"]) for o in cm["metadata"]["ownerReferences"]] == [("Agent", "coder")]
    agent = wait_for(lambda: (a := world.get("agent", "coder"))["status"].get("modifications") == 2 and a,
                     timeout=30, description="agent status.modifications 2")
    assert "LESSON-42" not in json.dumps(agent["spec"])
    assert "ModificationStored" in {e["reason"] for e in world.events("coder")}

    # The agent's own token may read its modifications but never write them or revert one.
    own = ["--kubeconfig", str(runner.workdir / f"kubeconfig-{learned['status']['pod']}"), "-n", world.ns]
    assert kubectl(*own, "get", "configmap", CONFIG_MAP, "-o", "name", check=False).returncode == 0
    for attempt in (["patch", "configmap", CONFIG_MAP, "--type", "merge", "-p", '{"data": {"mine": "{}"}}'],
                    ["create", "configmap", CONFIG_MAP, "--from-literal=mine={}"],
                    ["annotate", "agent", "coder", f"overseer.dev/revert={lesson['id']}"]):
        denied = kubectl(*own, *attempt, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), (attempt, denied.stderr)

    # The next goal has the lesson in its prompt and the tool among its tools, and can call it.
    world.goal("use", description="Count the words of 'one two three'.")
    used = world.wait_phase("use", "Succeeded", timeout=60)
    assert "Counted 3 words" in used["status"]["result"]

    # Reverted by annotation: kept for the record, gone from later goals.
    kubectl("annotate", "agent", "coder", "-n", world.ns, f"overseer.dev/revert={lesson['id']}")
    wait_for(lambda: records(world)[lesson["id"]]["reverted"], timeout=30, description="lesson marked reverted")
    assert records(world)[lesson["id"]]["revertedBy"] == "kubectl-annotate"
    assert not records(world)[script_tool["id"]]["reverted"]
    wait_for(lambda: world.get("agent", "coder")["status"].get("modifications") == 1, timeout=30,
             description="agent status.modifications 1")
    reverted = [e for e in world.events("coder") if e["reason"] == "ModificationReverted"]
    assert len(reverted) == 1 and reverted[0]["type"] == "Normal" and lesson["id"] in reverted[0]["message"]

    world.goal("after-revert", description="Anything.")
    world.wait_phase("after-revert", "Succeeded", timeout=60)
    [first] = [r for r in model.requests() if r["conversation"] == f"{world.ns}/after-revert"]
    assert "OVERSEER-LESSON-42" not in json.dumps(first["body"]["system"])
    assert "word_count" in {t["name"] for t in first["body"]["tools"]}
