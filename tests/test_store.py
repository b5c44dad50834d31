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


def kwok_pod(phase, state, *, warm=False, deleting=False):
    """A goal pod as the API server lists it, with the parts the operator does not read."""
    meta = {"namespace": "team", "name": "g1-1", "uid": "uid-p", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z", "generateName": "g1-",
            "labels": {"overseer.dev/goal": "g1", "overseer.dev/agent": "coder", "overseer.dev/attempt": "2"},
            "annotations": {"overseer.dev/exit-code": "0", "kubectl.kubernetes.io/default-container": "agent"},
            "ownerReferences": [{"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "g1",
                                 "uid": "uid-g1", "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kwok", "fieldsV1": {"f:status": {"f:phase": {}}}}]}
    if warm:
        meta["annotations"]["overseer.dev/warm-template"] = "abc123"
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    status = {"phase": phase, "hostIP": "10.0.0.1", "podIP": "10.0.0.9", "qosClass": "Burstable",
              "startTime": "2026-01-01T00:00:01Z",
              "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"}
                             for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
              "containerStatuses": [{"name": "agent", "image": "overseer/agent:1", "imageID": "sha256:ab",
                                     "containerID": "kwok://1", "ready": True, "restartCount": 0,
                                     "state": state, "lastState": {}}]}
    if phase == "Failed":
        status["reason"] = "Evicted"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "agent", "env": [{"name": "X", "value": "y" * 1000}]}]},
            "status": status}


POD_STATES = [
    ("Pending", {"waiting": {"reason": "ContainerCreating"}}, {}),
    ("Pending", {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"x\" not found"}}, {}),
    ("Running", {"running": {"startedAt": "2026-01-01T00:00:03Z"}}, {}),
    ("Running", {"running": {"startedAt": "2026-01-01T00:00:03Z"}}, {"deleting": True}),
    ("Running", {"running": {"startedAt": "2026-01-01T00:00:03Z"}}, {"warm": True}),
    ("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "x", "finishedAt": "y"}}, {}),
    ("Failed", {"terminated": {"exitCode": 3, "reason": "Error", "message": "boom"}}, {}),
]


def test_cached_pods_answer_every_question_the_operator_asks_as_the_whole_pod_does():
    from overseer.approvals import CREATED_BY
    from overseer.operator import dispatch, lifecycle, warm_pool
    from overseer.operator.runtime import slim_pod
    from overseer.operator.subgoals import parent_pod_unrecorded

    goal_raw = {"metadata": {"name": "g1", "uid": "uid-g1"},
                "status": {"conditions": [{"type": "Dispatched", "status": "True",
                                           "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    parent = {"metadata": {"name": "g1", "uid": "uid-g1"}, "status": {"phase": "Pending"}}
    child = {"metadata": {"name": "c", "namespace": "team",
                          "annotations": {CREATED_BY: "system:serviceaccount:team:overseer-agent-coder"}}}

    def answers(p):
        warm = "overseer.dev/warm-template" in p["metadata"].get("annotations", {})
        return (dispatch.pod_outcome(p), dispatch.attempt_of(p, "overseer.dev/attempt"),
                lifecycle.agent_started(goal_raw, p), warm and warm_pool._ready(p),
                parent_pod_unrecorded(child, parent, [p], lambda g: (g.get("status") or {}).get("phase")),
                p["metadata"].get("annotations", {}).get("overseer.dev/warm-template"),
                p["metadata"].get("creationTimestamp"), p["metadata"]["labels"], p["metadata"]["resourceVersion"],
                (p["apiVersion"], p["kind"], p["metadata"]["name"], p["metadata"]["namespace"], p["metadata"]["uid"]))

    for phase, state, extra in POD_STATES:
        raw = kwok_pod(phase, state, **extra)
        assert answers(slim_pod(raw)) == answers(raw), (phase, state, extra)
    slim = slim_pod(kwok_pod(*POD_STATES[2][:2]))
    assert "spec" not in slim and "managedFields" not in slim["metadata"] and "podIP" not in slim["status"]


def test_cached_goals_keep_only_the_managed_fields_that_say_who_annotated_and_who_wrote_phase_or_decisions():
    from overseer.approvals import set_by
    from overseer.operator.runtime import slim_goal
    from overseer.operator.trust import status_writers
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
    assert status_writers(slim, "phase") == {"overseer-operator"} and status_writers(slim, "decisions") == {"kubectl-patch"}
    assert status_writers(slim, "heartbeat") == set()


def test_cached_goals_keep_of_each_managed_fields_entry_only_the_fields_trust_reads():
    from overseer.operator.runtime import slim_goal
    from overseer.operator.trust import status_writers
    raw = goal("a", "coder")
    operator_fields = {"f:phase": {}, "f:message": {}, "f:attempt": {},
                       "f:conditions": {f'k:{{"type":"{t}"}}': {".": {}, "f:status": {}, "f:reason": {}}
                                        for t in ("Ready", "Dispatched", "Succeeded")}}
    raw["metadata"]["managedFields"] = [{"manager": "overseer-operator", "operation": "Update",
                                         "apiVersion": "overseer.dev/v1alpha1", "subresource": "status",
                                         "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                                         "fieldsV1": {"f:status": operator_fields}}]
    slim = slim_goal(raw)
    assert slim["metadata"]["managedFields"] == [{"manager": "overseer-operator", "time": "2026-12-01T10:00:00Z",
                                                  "fieldsV1": {"f:status": {"f:phase": {}}}}]
    assert status_writers(slim, "phase") == {"overseer-operator"}


def test_the_watch_showing_a_newer_version_drops_the_copy_of_our_write():
    rt = runtime()
    rt.written["uid-a"] = ("7", goal("a", "coder", "Running", rv="8"))
    rt.forget("MODIFIED", goal("a", "coder", rv="7"))  # a late copy of what the write was based on
    assert "uid-a" in rt.written
    rt.forget("MODIFIED", goal("a", "coder", "Running", rv="8"))  # the write itself
    assert "uid-a" not in rt.written
