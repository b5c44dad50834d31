"""A goal's workspace: the claim per goal, the pod's volumes, the status, and what the agent does
with a dependency's files and with a workspace an earlier attempt never saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from overseer.agent import workspace as agent_workspace
from overseer.operator.pods import render_pod
from overseer.operator.workspace import claim_name, render_claim, workspace_state

WITH_CLAIM = {"workspace": {"size": "5Gi", "storageClassName": "fast", "accessModes": ["ReadWriteOnce"]}}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def mounts_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}


def env_values(pod: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def claim(phase: str | None) -> dict[str, Any]:
    return {"metadata": {"name": "x"}, "status": {"phase": phase} if phase else {}}


def test_without_spec_workspace_the_pod_gets_an_empty_dir_and_says_so(make_goal, make_agent, settings):
    pod = render_pod(make_goal(), make_agent(), 1, settings)
    assert volumes_of(pod)["workspace"] == {"name": "workspace", "emptyDir": {}}
    assert env_values(pod)["OVERSEER_WORKSPACE_VOLUME"] == "emptyDir"


def test_every_attempt_mounts_the_same_claim_of_its_goal(make_goal, make_agent, settings):
    agent = make_agent(**WITH_CLAIM)
    first, second = (render_pod(make_goal(), agent, n, settings) for n in (1, 2))
    assert volumes_of(first)["workspace"] == volumes_of(second)["workspace"] == {
        "name": "workspace", "persistentVolumeClaim": {"claimName": "fix-ci-workspace"}}
    assert mounts_of(first)["workspace"]["mountPath"] == "/workspace"
    assert env_values(first)["OVERSEER_WORKSPACE_VOLUME"] == "claim"


def test_the_claim_follows_spec_workspace_and_is_owned_by_its_goal(make_goal, make_agent):
    goal = make_goal()
    rendered = render_claim(goal, make_agent(**WITH_CLAIM))
    assert rendered["metadata"]["name"] == claim_name("fix-ci") == "fix-ci-workspace"
    assert rendered["metadata"]["labels"]["overseer.dev/goal"] == "fix-ci"
    [owner] = rendered["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Goal", goal.metadata["uid"])
    assert rendered["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                                "storageClassName": "fast"}


def test_a_retained_claim_has_no_owner_so_it_outlives_the_goal(make_goal, make_agent):
    rendered = render_claim(make_goal(), make_agent(workspace={"retain": True}))
    assert "ownerReferences" not in rendered["metadata"]
    assert "storageClassName" not in rendered["spec"]  # the cluster's default class
    assert rendered["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_a_long_goal_name_still_gives_a_valid_claim_name():
    name = claim_name("g" * 250)
    assert len(name) <= 253 and name.endswith("-workspace") and name != claim_name("g" * 249 + "h")


def test_workspace_from_mounts_the_dependencys_claim_read_only(make_goal, make_agent, settings):
    goal = make_goal(dependsOn=["setup-repo"], workspaceFrom={"goal": "setup-repo", "mode": "ReadOnly"})
    pod = render_pod(goal, make_agent(**WITH_CLAIM), 1, settings, source_claim=claim_name("setup-repo"))
    assert volumes_of(pod)["workspace-from"] == {"name": "workspace-from", "persistentVolumeClaim": {
        "claimName": "setup-repo-workspace", "readOnly": True}}
    assert mounts_of(pod)["workspace-from"] == {"name": "workspace-from", "mountPath": "/workspace-from/setup-repo",
                                                "readOnly": True}
    env = env_values(pod)
    assert (env["OVERSEER_WORKSPACE_FROM"], env["OVERSEER_WORKSPACE_FROM_MODE"]) == (
        "/workspace-from/setup-repo", "ReadOnly")


def test_status_shows_the_claim_and_a_pending_claim_gets_a_condition(make_goal, make_agent):
    goal, agent = make_goal(), make_agent(**WITH_CLAIM)
    pending = workspace_state(goal, agent, claim("Pending"), None)
    assert pending.status == {"claimName": "fix-ci-workspace", "claimPhase": "Pending"}
    ctype, ok, reason, message = pending.condition or ("", True, "", "")
    assert (ctype, ok, reason) == ("WorkspaceReady", False, "ClaimPending")
    assert "StorageClass 'fast'" in message and "kubectl describe pvc fix-ci-workspace" in message
    assert workspace_state(goal, agent, None, None).condition[2] == "ClaimPending"  # not seen yet
    bound = workspace_state(goal, agent, claim("Bound"), None)
    assert bound.condition[:3] == ("WorkspaceReady", True, "ClaimBound") and bound.blocked is None
    assert workspace_state(goal, agent, claim("Lost"), None).condition[2] == "ClaimLost"
    assert workspace_state(goal, make_agent(), None, None) == workspace_state(goal, make_agent(), None, None)
    assert workspace_state(goal, make_agent(), None, None).condition is None


def test_a_dependency_without_a_claim_fails_workspace_from_naming_the_fix(make_goal, make_agent):
    goal = make_goal(dependsOn=["setup-repo"], workspaceFrom={"goal": "setup-repo"})
    state = workspace_state(goal, make_agent(**WITH_CLAIM), claim("Bound"), None)
    assert state.condition is not None and state.condition[2] == "SourceClaimMissing"
    assert state.blocked is not None and "spec.workspaceFrom.goal 'setup-repo'" in state.blocked
    assert "spec.workspace" in state.blocked
    ok = workspace_state(goal, make_agent(**WITH_CLAIM), claim("Bound"), claim("Bound"))
    assert ok.blocked is None and ok.status == {"claimName": "fix-ci-workspace", "claimPhase": "Bound",
                                                "sourceClaim": "setup-repo-workspace"}


# --- the agent's side ------------------------------------------------------------------------------


def test_copy_seeds_the_workspace_once_and_not_over_a_retry(tmp_path: Path):
    source, ws = tmp_path / "from", tmp_path / "ws"
    (source / "src").mkdir(parents=True)
    (source / "src" / "parser.py").write_text("v1")
    (source / ".overseer").mkdir()
    (source / ".overseer" / "state.json").write_text("{}")  # the dependency's own checkpoints stay there
    ws.mkdir()
    start = agent_workspace.prepare(ws, "uid-1", "claim", source, "Copy", "setup-repo")
    assert (ws / "src" / "parser.py").read_text() == "v1"
    assert not (ws / ".overseer" / "state.json").exists()
    assert start.task_note and "setup-repo" in start.task_note
    (ws / "src" / "parser.py").write_text("v2 by attempt 1")
    again = agent_workspace.prepare(ws, "uid-1", "claim", source, "Copy", "setup-repo")
    assert (ws / "src" / "parser.py").read_text() == "v2 by attempt 1"
    assert again.resume_note is None


def test_read_only_source_is_told_not_copied(tmp_path: Path):
    source, ws = tmp_path / "from", tmp_path / "ws"
    source.mkdir()
    (source / "data.csv").write_text("1,2")
    ws.mkdir()
    start = agent_workspace.prepare(ws, "uid-1", "claim", source, "ReadOnly", "setup-repo")
    assert not (ws / "data.csv").exists()
    assert start.task_note and str(source) in start.task_note and "read-only" in start.task_note


def test_an_empty_dir_new_to_this_goal_warns_a_resumed_conversation(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    first = agent_workspace.prepare(ws, "uid-1", "emptyDir", None, None)
    assert first.resume_note and "files written by earlier attempts are gone" in first.resume_note.lower()
    assert json.loads((ws / ".overseer" / "workspace-uid-1.json").read_text()) == {"seeded": False}
    # The same volume seen again (a claim kept across attempts): nothing to warn about.
    assert agent_workspace.prepare(ws, "uid-1", "emptyDir", None, None).resume_note is None
