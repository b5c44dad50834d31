"""A goal pod's first watch event needs no reconcile when dispatch already recorded it."""

from overseer.operator.goals import GoalReconciler
from overseer.operator.runtime import Runtime
from overseer.operator.settings import Settings


def setup(phase="Running", pod="fix-bug-1", attempt=1):
    rt = Runtime(kube=None, settings=Settings(), events=None)  # type: ignore[arg-type]
    rt.stores["goals"].upsert({"metadata": {"namespace": "team", "name": "fix-bug", "uid": "u", "resourceVersion": "5"},
                               "spec": {"agentRef": {"name": "coder"}},
                               "status": {"phase": phase, "pod": pod, "attempt": attempt, "agent": "coder"}})
    rt.inflight[("team", "coder")].add("fix-bug-1")
    return rt, GoalReconciler(rt)


def pod(name="fix-bug-1", attempt="1", phase="Pending"):
    return {"metadata": {"namespace": "team", "name": name, "labels": {
        "overseer.dev/goal": "fix-bug", "overseer.dev/agent": "coder", "overseer.dev/attempt": attempt}},
        "status": {"phase": phase}}


def test_the_pod_dispatch_recorded_drops_its_reservation_and_needs_no_reconcile():
    rt, goals = setup()
    assert goals.pod_recorded(pod())
    assert rt.inflight[("team", "coder")] == set()


def test_any_other_pod_is_reconciled():
    assert not setup(phase="Pending")[1].pod_recorded(pod())        # status not written yet (crash between)
    assert not setup()[1].pod_recorded(pod("fix-bug-2", attempt="2"))  # an attempt the status does not name
    assert not setup()[1].pod_recorded(pod(phase="Failed"))            # already over
    rt, goals = setup(phase="Pending")
    goals.pod_recorded(pod())
    assert rt.inflight[("team", "coder")] == {"fix-bug-1"}
