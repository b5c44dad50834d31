"""The operator's caches answer per-agent questions from indexes kept current per event."""

from overseer.operator.controller import namespace_filter
from overseer.operator.runtime import Runtime, new_stores
from overseer.operator.settings import Settings


def goal(name, agent=None, phase=None, tokens=0, depends_on=(), ns="team", rv="1"):
    raw = {"metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}", "resourceVersion": rv},
           "spec": {"agentRef": {"name": agent}} if agent else {"agentSelector": {}}}
    raw["spec"]["dependsOn"] = list(depends_on)
    if phase:
        raw["status"] = {"phase": phase, "agent": agent, "tokens": {"total": tokens}}
    return raw


def pod(name, goal_name, agent, phase="Running", deleting=False, ns="team"):
    meta = {"namespace": ns, "name": name, "labels": {"overseer.dev/goal": goal_name, "overseer.dev/agent": agent}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def runtime():
    return Runtime(kube=None, settings=Settings(), events=None)  # type: ignore[arg-type]


def test_goal_counts_follow_each_goal_through_its_phases():
    rt = runtime()
    goals = rt.stores["goals"]
    goals.upsert(goal("a", "coder"))
    assert rt.goal_counts("team", "coder") == {"runningGoals": 0, "queuedGoals": 0, "succeededGoals": 0,
                                               "failedGoals": 0, "tokensUsed": 0}
    goals.upsert(goal("a", "coder", "Running", tokens=10, rv="2"))
    goals.upsert(goal("b", "coder", "Queued", rv="3"))
    goals.upsert(goal("c", "reviewer", "Running", tokens=99, rv="4"))
    assert rt.goal_counts("team", "coder")["runningGoals"] == 1
    assert rt.goal_counts("team", "coder")["queuedGoals"] == 1
    goals.upsert(goal("a", "coder", "Succeeded", tokens=25, rv="5"))
    counts = rt.goal_counts("team", "coder")
    assert (counts["runningGoals"], counts["succeededGoals"], counts["tokensUsed"]) == (0, 1, 25)
    goals.delete(("team", "b"))
    assert rt.goal_counts("team", "coder")["queuedGoals"] == 0
    assert rt.goal_counts("team", "reviewer")["tokensUsed"] == 99


def test_queued_index_holds_only_queued_goals_of_that_agent():
    rt = runtime()
    goals = rt.stores["goals"]
    goals.upsert(goal("a", "coder", "Queued"))
    goals.upsert(goal("b", "coder", "Running"))
    goals.upsert(goal("c", "coder", "Queued", ns="other"))
    assert [g["metadata"]["name"] for g in rt.by("goals", "queued", ("team", "coder"))] == ["a"]
    goals.upsert(goal("a", "coder", "Running", rv="2"))
    assert rt.by("goals", "queued", ("team", "coder")) == []


def test_dependents_are_found_by_the_goal_they_wait_for():
    goals = new_stores()["goals"]
    goals.upsert(goal("build"))
    goals.upsert(goal("test", depends_on=["build"]))
    goals.upsert(goal("ship", depends_on=["build", "test"]))
    assert goals.names("dependency", ("team", "build")) == {"test", "ship"}
    goals.upsert(goal("ship", depends_on=["test"], rv="2"))
    assert goals.names("dependency", ("team", "build")) == {"test"}


def test_live_pods_count_pods_created_but_not_seen_yet_and_not_finished_ones():
    rt = runtime()
    pods = rt.stores["pods"]
    pods.upsert(pod("g1-1", "g1", "coder"))
    pods.upsert(pod("g2-1", "g2", "coder", phase="Succeeded"))
    pods.upsert(pod("g3-1", "g3", "coder", deleting=True))
    assert rt.live_pods_of_agent("team", "coder") == 1
    rt.inflight[("team", "coder")].add("g4-1")  # created, its watch event not here yet
    assert rt.live_pods_of_agent("team", "coder") == 2
    pods.upsert(pod("g1-1", "g1", "coder", phase="Failed"))
    assert rt.live_pods_of_agent("team", "coder") == 1
    pods.delete(("team", "g2-1"))
    assert [p["metadata"]["name"] for p in rt.by("pods", "goal", ("team", "g2"))] == []


def test_own_status_write_is_seen_until_the_watch_catches_up():
    rt = runtime()
    rt.stores["goals"].upsert(goal("a", "coder", rv="7"))
    written = goal("a", "coder", "Running", rv="8")
    rt.written["uid-a"] = ("7", written)
    assert rt.one("goals", ("team", "a"))["status"]["phase"] == "Running"
    assert rt.is_own_write(written) and not rt.is_own_write(goal("a", "coder", rv="9"))
    rt.stores["goals"].upsert(goal("a", "coder", "Succeeded", rv="9"))
    assert rt.one("goals", ("team", "a"))["status"]["phase"] == "Succeeded"


def test_namespace_filter_watches_names_alone_and_globs_cluster_wide():
    assert namespace_filter([]) == ([None], None)
    assert namespace_filter(["a", "b", "a"]) == (["a", "b"], None)
    watched, accept = namespace_filter(["team-*", "ops"])
    assert watched == [None]
    assert accept("team-x") and accept("ops") and not accept("other")


def test_cached_pods_keep_metadata_and_status_only():
    from overseer.operator.runtime import slim_pod
    raw = pod("g1-1", "g1", "coder")
    raw["metadata"]["managedFields"] = [{"manager": "kwok"}]
    raw["spec"] = {"containers": [{"name": "agent", "env": [{"name": "X", "value": "y" * 1000}]}]}
    slim = slim_pod(raw)
    assert "spec" not in slim and "managedFields" not in slim["metadata"]
    assert slim["metadata"]["labels"] == raw["metadata"]["labels"] and slim["status"] == {"phase": "Running"}


def test_cached_goals_keep_only_the_managed_fields_that_say_who_annotated_and_who_wrote_phase_or_decisions():
    from overseer.approvals import set_by
    from overseer.operator.runtime import slim_goal
    raw = goal("a", "coder")
    raw["metadata"]["annotations"] = {"overseer.dev/approve": "req-1"}
    raw["metadata"]["managedFields"] = [
        {"manager": "overseer-operator", "fieldsV1": {"f:status": {"f:phase": {}}}},
        {"manager": "overseer-agent", "fieldsV1": {"f:status": {"f:heartbeat": {}, "f:iteration": {}}}},
        {"manager": "kubectl-patch", "fieldsV1": {"f:status": {"f:decisions": {}}}},
        {"manager": "kubectl-annotate", "time": "2026-12-01T10:00:00Z",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/approve": {}}}}},
    ]
    slim = slim_goal(raw)
    assert [e["manager"] for e in slim["metadata"]["managedFields"]] == [
        "overseer-operator", "kubectl-patch", "kubectl-annotate"]
    assert set_by(slim, "overseer.dev/approve") == ("kubectl-annotate", "2026-12-01T10:00:00Z")


def test_the_watch_showing_a_newer_version_drops_the_copy_of_our_write():
    rt = runtime()
    rt.written["uid-a"] = ("7", goal("a", "coder", "Running", rv="8"))
    rt.forget("MODIFIED", goal("a", "coder", rv="7"))  # a late copy of what the write was based on
    assert "uid-a" in rt.written
    rt.forget("MODIFIED", goal("a", "coder", "Running", rv="8"))  # the write itself
    assert "uid-a" not in rt.written
