"""The warm pool's pure parts: the idle pod it renders, the patch that claims one, what a pool of
given pods should do, which goals it serves, and how the agent in a warm pod knows its goal."""

from __future__ import annotations

from typing import Any

import pytest

from overseer.agent.config import AgentSettings
from overseer.agent.warm import claimed_by
from overseer.contract import Env
from overseer.operator.pods import WARM_TEMPLATE, claim_patch, render_pod, render_warm_pod
from overseer.operator.settings import Settings
from overseer.operator.warm_pool import plan, serves


def env_names(pod: dict[str, Any]) -> list[str]:
    return [v["name"] for v in pod["spec"]["containers"][0]["env"]]


def test_a_warm_pod_is_a_goal_pod_without_the_goal(make_agent, make_goal, make_capability) -> None:
    agent, caps = make_agent(capabilities=["pytest"]), [make_capability("pytest")]
    fresh = render_pod(make_goal("fix-ci"), agent, 1, Settings(), caps)

    warm = render_warm_pod(agent, Settings(), caps)

    assert env_names(warm) == [Env.POD_NAME if n == Env.GOAL_NAME else n for n in env_names(fresh)]
    assert warm["spec"]["containers"][0]["env"][0]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    drop_env = [{**c, "env": c["env"][1:]} for c in fresh["spec"]["containers"]]
    assert {**warm["spec"], "containers": [{**c, "env": c["env"][1:]} for c in warm["spec"]["containers"]]} == \
        {**fresh["spec"], "containers": drop_env}  # same ServiceAccount, volumes, security, tools container
    meta = warm["metadata"]
    assert meta["generateName"] == "coder-warm-" and "name" not in meta
    goal_labels = ("overseer.dev/goal", "overseer.dev/attempt")
    assert meta["labels"] == {**{k: v for k, v in fresh["metadata"]["labels"].items() if k not in goal_labels},
                              "overseer.dev/warm": "idle"}  # the agent label: the NetworkPolicy selects it
    assert [(o["kind"], o["name"]) for o in meta["ownerReferences"]] == [("Agent", "coder")]


def test_the_template_digest_follows_what_the_pod_would_run(make_agent, make_capability) -> None:
    agent = make_agent(capabilities=["pytest"])
    plain = render_warm_pod(agent, Settings(), [make_capability("pytest")])
    with_secret = render_warm_pod(agent, Settings(), [make_capability(
        "pytest", command={"run": ["pytest"], "env": [{"name": "TOKEN", "secretKeyRef": {"name": "ci", "key": "t"}}]})])

    assert render_warm_pod(agent, Settings(), [make_capability("pytest")]) == plain
    assert plain["metadata"]["annotations"][WARM_TEMPLATE] != with_secret["metadata"]["annotations"][WARM_TEMPLATE]


def test_the_claim_makes_the_pod_the_goals_on_condition_that_nobody_changed_it_first(make_goal) -> None:
    pod = {"metadata": {"name": "coder-warm-x1", "resourceVersion": "4711",
                        "labels": {"overseer.dev/agent": "coder", "overseer.dev/warm": "idle"}}}

    patch = claim_patch(pod, make_goal("fix-ci"), 2)

    meta = patch["metadata"]
    assert meta["resourceVersion"] == "4711"
    assert meta["labels"] == {"overseer.dev/goal": "fix-ci", "overseer.dev/attempt": "2", "overseer.dev/warm": None}
    assert [(o["kind"], o["name"], o["controller"]) for o in meta["ownerReferences"]] == [("Goal", "fix-ci", True)]


def warm(name: str, phase: str = "Running", ready: bool = True, template: str = "t1", created: str = "2026-01-01T00:00:00Z",
         deleting: bool = False, ns: str = "team-a") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "creationTimestamp": created,
                            "annotations": {WARM_TEMPLATE: template}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    status: dict[str, Any] = {"phase": phase}
    if phase == "Running":
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": status}


def test_an_empty_pool_starts_its_size() -> None:
    todo = plan(3, "t1", [], set())

    assert (todo.idle, todo.create, todo.delete) == ([], 3, [])


@pytest.mark.parametrize(("pods", "taken", "idle", "create", "delete"), [
    ([warm("a"), warm("b")], set(), ["a", "b"], 0, []),
    # the readiest first: Ready, then Running, then Pending
    ([warm("p", phase="Pending"), warm("r", ready=False), warm("a")], set(), ["a", "r"], 0, ["p"]),
    # a pod whose process ended (killed while idle) is replaced
    ([warm("a", phase="Failed"), warm("b")], set(), ["b"], 1, ["a"]),
    # a pod rendered from an older spec is replaced
    ([warm("old", template="t0"), warm("b")], set(), ["b"], 1, ["old"]),
    # a claimed pod the watch still shows is neither idle nor counted nor deleted
    ([warm("a"), warm("b")], {("team-a", "a")}, ["b"], 1, []),
    # a pod being deleted is left to go
    ([warm("a", deleting=True), warm("b")], set(), ["b"], 1, []),
    # a surplus (a create the cache had not shown) is deleted, the newest first
    ([warm("a"), warm("b", created="2026-01-01T00:00:05Z"), warm("c", created="2026-01-01T00:00:09Z")],
     set(), ["a", "b"], 0, ["c"]),
])
def test_the_pool_keeps_its_size_of_current_live_pods(pods, taken, idle, create, delete) -> None:
    todo = plan(2, "t1", pods, taken)

    assert (todo.idle, todo.create, todo.delete) == (idle, create, delete)


def test_pods_created_but_not_seen_yet_are_not_created_again() -> None:
    todo = plan(3, "t1", [warm("a")], set(), starting=1)

    assert (todo.idle, todo.create) == (["a"], 1)


def test_size_zero_empties_the_pool() -> None:
    todo = plan(0, "t1", [warm("a"), warm("b")], set())

    assert (todo.idle, todo.create, sorted(todo.delete)) == ([], 0, ["a", "b"])


def test_only_goals_with_an_emptydir_workspace_are_served(make_agent, make_goal) -> None:
    pooled = make_agent(warmPool=2)

    assert serves(pooled, make_goal("fix-ci"))
    assert not serves(make_agent(), make_goal("fix-ci"))
    assert not serves(pooled, make_goal("fix-ci", dependsOn=["build"], workspaceFrom={"goal": "build"}))
    assert not serves(make_agent(warmPool=2, workspace={"size": "1Gi"}), make_goal("fix-ci"))


def test_the_agent_in_a_warm_pod_works_on_the_goal_whose_status_names_its_pod() -> None:
    goal = {"metadata": {"name": "fix-ci"}, "status": {"pod": "coder-warm-x1", "agent": "coder"}}

    assert claimed_by(goal, "coder-warm-x1", "coder")
    assert not claimed_by(goal, "coder-warm-x2", "coder")
    assert not claimed_by(goal, "coder-warm-x1", "reviewer")
    assert not claimed_by({**goal, "metadata": {"name": "fix-ci", "deletionTimestamp": "now"}}, "coder-warm-x1", "coder")


def test_the_agent_needs_a_goal_name_or_its_pod_name(clean_env) -> None:
    clean_env.setenv(Env.GOAL_NAMESPACE, "team-a")
    clean_env.setenv(Env.AGENT_NAME, "coder")

    with pytest.raises(ValueError, match="OVERSEER_GOAL_NAME.*OVERSEER_POD_NAME"):
        AgentSettings()
    clean_env.setenv(Env.POD_NAME, "coder-warm-x1")
    assert (AgentSettings().goal_name, AgentSettings().pod_name) == (None, "coder-warm-x1")
