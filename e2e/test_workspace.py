"""A goal's workspace on a real API server: a PersistentVolumeClaim per goal (bound by the
controller-manager to a hostPath PersistentVolume the harness provisions) keeps the files across
attempts and seeds dependent goals; an emptyDir loses them with the pod, and the agent says so.
Checkpoints are PostgreSQL's, so the conversation resumes whatever the workspace kept."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from e2e.harness import wait_for
from e2e.test_agent_runtime import text, tool
from e2e.world import World
from overseer.operator.workspace import claim_name
from tests.integration.conftest import postgres  # noqa: F401 - the shared server fixture

# The model takes its time before step 3, so the kill (after step 2) lands before step 4 is written.
STEPS = [{**tool("bash", command=f"echo step-{i} >> steps.txt"), "delay": 4 if i == 3 else 0.5} for i in range(1, 5)]
GONE = "Files written by earlier attempts are gone"


@pytest.fixture
def operator_env(postgres: Any) -> dict[str, str]:  # noqa: F811
    return {"OVERSEER_KNOWLEDGE_ADMIN_URL": postgres.dsn}


def kill_after_two_steps(world: World, runner: Any, goal: str, steps: Any) -> str:
    """SIGKILL the first attempt's agent once two steps are in its workspace; the pod's name."""
    wait_for(lambda: steps().exists() and len(steps().read_text().split()) >= 2, timeout=60,
             description="two steps written")
    first = world.get("goal", goal)["status"]["pod"]
    runner.kill(first)
    return first


def user_texts(model: Any, goal: str) -> list[str]:
    return [b["text"] for r in model.requests() if r["conversation"].endswith(f"/{goal}")
            for m in r["body"]["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "text"]


def test_a_killed_agent_resumes_its_conversation_with_its_files_on_the_claim(
        world: World, agents: Any, postgres: Any) -> None:  # noqa: F811
    model, runner = agents({"long": [*STEPS, text("All four steps done.")]}, workspace="{size: 1Gi}")
    world.wait_condition("agent", "coder", "KnowledgeBase", "True", timeout=60)
    world.goal("long", retries=2)
    ws = runner.claim_folder(claim_name("long"))
    first = kill_after_two_steps(world, runner, "long", lambda: ws / "steps.txt")

    done = world.wait_phase("long", "Succeeded", timeout=90)
    assert done["status"]["attempt"] == 2
    assert done["status"]["workspace"] == {"claimName": "long-workspace", "claimPhase": "Bound"}
    assert world.condition("goal", "long", "WorkspaceReady")["reason"] == "ClaimBound"
    # attempt 2 picked up the conversation (from PostgreSQL, not a file) and the files of attempt 1
    assert (ws / "steps.txt").read_text().split() == ["step-1", "step-2", "step-3", "step-4"]
    assert "resuming at iteration" in runner.log(done["status"]["pod"])
    assert not (ws / ".overseer" / "checkpoints").exists()
    with psycopg.connect(postgres.dsn) as db:
        assert db.execute("SELECT count(*) FROM checkpoint_messages").fetchone()[0] > 0
    assert not any(GONE in t for t in user_texts(model, "long"))
    pods = {p["metadata"]["name"]: p for p in world.goal_pods("long")}
    assert {v["persistentVolumeClaim"]["claimName"] for p in pods.values() for v in p["spec"]["volumes"]
            if "persistentVolumeClaim" in v} == {"long-workspace"}
    assert first in pods and len(pods) == 2


def test_with_an_empty_dir_the_files_are_gone_and_the_resumed_agent_says_so(
        world: World, agents: Any) -> None:
    model, runner = agents({"long": [*STEPS, text("Done; earlier steps were lost with the first pod.")]})
    world.wait_condition("agent", "coder", "KnowledgeBase", "True", timeout=60)
    world.goal("long", retries=2)

    def steps() -> Any:
        pod = world.get("goal", "long")["status"].get("pod")
        p = next((p for p in world.goal_pods("long") if p["metadata"]["name"] == pod), None)
        return runner.empty_dir(p["metadata"]["uid"] if p else "none", "workspace") / "steps.txt"

    kill_after_two_steps(world, runner, "long", steps)
    done = world.wait_phase("long", "Succeeded", timeout=90)
    assert done["status"]["attempt"] == 2 and "workspace" not in done["status"]
    assert world.condition("goal", "long", "WorkspaceReady") is None
    # the second pod's emptyDir holds only what attempt 2 did after resuming
    written = steps().read_text().split()
    assert "step-1" not in written and written[-1] == "step-4", written
    assert "resuming at iteration" in runner.log(done["status"]["pod"])
    assert any(GONE in t for t in user_texts(model, "long"))


def test_a_dependent_goal_starts_from_a_copy_of_its_dependencys_files(world: World, agents: Any) -> None:
    model, runner = agents({
        "setup-repo": [tool("write_file", path="parser.py", content="def add(a, b):\n    return a - b\n"),
                       text("Set up parser.py.")],
        "fix-ci": [tool("edit_file", path="parser.py", old_string="return a - b", new_string="return a + b"),
                   tool("bash", command="grep -c 'a + b' parser.py"),
                   text("Fixed add().")],
    }, workspace="{size: 1Gi}")
    world.goal("setup-repo")
    world.goal("fix-ci", depends="[setup-repo]", extra="  workspaceFrom: {goal: setup-repo, mode: Copy}")
    done = world.wait_phase("fix-ci", "Succeeded", timeout=90)

    assert done["status"]["workspace"]["sourceClaim"] == "setup-repo-workspace"
    assert "return a + b" in (runner.claim_folder("fix-ci-workspace") / "parser.py").read_text()
    # the copy was edited, not the dependency's files
    assert "return a - b" in (runner.claim_folder("setup-repo-workspace") / "parser.py").read_text()
    [pod] = world.goal_pods("fix-ci")
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["workspace-from"] == {"name": "workspace-from", "mountPath": "/workspace-from/setup-repo",
                                        "readOnly": True}
    assert any("were copied into your workspace" in t for t in user_texts(model, "fix-ci"))
    # the bash call's record (kept for a resumed pod) went with the goal's end
    assert not (runner.claim_folder("fix-ci-workspace") / ".overseer" / "calls" / done["metadata"]["uid"]).exists()

    # the claim is owned by its goal: deleting the goal lets the garbage collector take it
    world.kubectl("delete", "goal", "fix-ci", "-n", world.ns)
    wait_for(lambda: not world.items("persistentvolumeclaims", "-l", "overseer.dev/goal=fix-ci"), timeout=60,
             description="claim fix-ci-workspace deleted with its goal")
    assert world.get("persistentvolumeclaim", "setup-repo-workspace") is not None


def test_a_read_only_source_is_mounted_where_the_model_is_told_and_not_copied(world: World, agents: Any) -> None:
    model, runner = agents({
        "setup-repo": [tool("write_file", path="data.csv", content="1,2,3\n"), text("Wrote data.csv.")],
        "report": [tool("bash", command="cat /dev/null"), text("Read it.")],
    }, workspace="{size: 1Gi}")
    world.goal("setup-repo")
    world.goal("report", depends="[setup-repo]", extra="  workspaceFrom: {goal: setup-repo, mode: ReadOnly}")
    world.wait_phase("report", "Succeeded", timeout=90)
    # the model is told where the dependency's files are (the harness's folder for that read-only mount)
    source = runner.claim_folder("setup-repo-workspace")
    told = [t for t in user_texts(model, "report") if "read-only" in t]
    assert told and str(source) in told[0], user_texts(model, "report")
    assert (source / "data.csv").read_text() == "1,2,3\n"
    assert not (runner.claim_folder("report-workspace") / "data.csv").exists()


def test_a_claim_no_volume_can_bind_shows_why_on_the_goal(world: World, agents: Any) -> None:
    agents({"stuck": [text("never asked")]}, workspace="{size: 1Gi, storageClassName: no-such-class}")
    world.goal("stuck")
    cond = world.wait_condition("goal", "stuck", "WorkspaceReady", "False", "ClaimPending", timeout=60)
    assert "StorageClass 'no-such-class'" in cond["message"]
    goal = world.get("goal", "stuck")
    assert goal["status"]["workspace"] == {"claimName": "stuck-workspace", "claimPhase": "Pending"}
    [pod] = world.goal_pods("stuck")
    assert (pod.get("status") or {}).get("phase") == "Pending"  # the scheduler waits for the claim


def test_workspace_from_a_dependency_without_a_claim_fails_naming_the_field(world: World, agents: Any) -> None:
    agents({"setup-repo": [text("Set up.")], "fix-ci": [text("never asked")]})
    world.goal("setup-repo")
    world.goal("fix-ci", depends="[setup-repo]", extra="  workspaceFrom: {goal: setup-repo}")
    failed = world.wait_phase("fix-ci", "Failed", timeout=60)
    assert world.condition("goal", "fix-ci", "Complete")["reason"] == "SourceClaimMissing"
    assert "spec.workspaceFrom.goal 'setup-repo'" in failed["status"]["message"]
    assert "give that goal's Agent spec.workspace" in failed["status"]["message"]
    assert not world.goal_pods("fix-ci")
