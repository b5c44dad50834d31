"""What wakes a goal: its pod's first watch event only if dispatch did not record it already,
a freed slot only as many queued goals as there are free slots."""

from overseer.operator.controller import Operator
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


def test_the_pod_dispatch_recorded_needs_no_reconcile():
    rt, goals = setup()
    assert goals.pod_recorded(pod())
    rt.stores["pods"].upsert(pod())
    Operator(rt).pod_changed("ADDED", pod(), None)
    assert len(rt.goals) == 0


def test_any_other_pod_is_reconciled():
    assert not setup(phase="Pending")[1].pod_recorded(pod())        # status not written yet (crash between)
    assert not setup()[1].pod_recorded(pod("fix-bug-2", attempt="2"))  # an attempt the status does not name
    assert not setup()[1].pod_recorded(pod(phase="Failed"))            # already over
    rt, _ = setup(phase="Pending")
    rt.stores["pods"].upsert(pod())
    Operator(rt).pod_changed("ADDED", pod(), None)
    assert len(rt.goals) == 1


def test_a_pods_first_watch_event_ends_its_reservation_so_it_is_counted_once():
    for phase in ("Running", "Pending"):  # recorded by dispatch, or the watch came first
        rt, _ = setup(phase=phase)
        assert rt.live_pods_of_agent("team", "coder") == 1  # in flight
        rt.stores["pods"].upsert(pod())
        Operator(rt).pod_changed("ADDED", pod(), None)
        assert rt.inflight[("team", "coder")] == set()
        assert rt.live_pods_of_agent("team", "coder") == 1  # from the cache


def queue_world(slots=2, live=1):
    rt = Runtime(kube=None, settings=Settings(), events=None)  # type: ignore[arg-type]
    rt.stores["agents"].upsert({"metadata": {"namespace": "team", "name": "coder"}, "spec": {"maxConcurrentGoals": slots}})
    for i, (name, retry_at) in enumerate([("q1", None), ("q2", "2999-01-01T00:00:00Z"), ("q3", None), ("q4", None)]):
        status = {"phase": "Queued", "agent": "coder", **({"retryAt": retry_at} if retry_at else {})}
        rt.stores["goals"].upsert({"metadata": {"namespace": "team", "name": name, "creationTimestamp": f"2026-12-01T10:00:0{i}Z"},
                                   "spec": {"agentRef": {"name": "coder"}}, "status": status})
    for i in range(live):
        rt.stores["pods"].upsert(pod(f"run-{i}"))
    return rt, GoalReconciler(rt)


def queued_keys(rt):
    return sorted(k[1] for k in rt.goals._queued)


def test_a_freed_slot_wakes_only_as_many_goals_as_there_are_free_slots_oldest_first():
    rt, goals = queue_world(slots=2, live=1)
    goals.wake_queue("team", "coder")
    assert queued_keys(rt) == ["q1"]
    rt, goals = queue_world(slots=3, live=0)
    goals.wake_queue("team", "coder")
    assert queued_keys(rt) == ["q1", "q3", "q4"]  # q2 waits out its retry backoff on its own timer


def test_a_full_agent_wakes_nobody_and_the_sweep_visits_only_agents_with_a_queue():
    rt, goals = queue_world(slots=1, live=1)
    goals.sweep_queues()
    assert queued_keys(rt) == []
    rt.stores["pods"].delete(("team", "run-0"))
    goals.sweep_queues()
    assert queued_keys(rt) == ["q1"]


async def test_an_agents_counts_follow_one_goal_within_a_second_and_a_burst_every_few_seconds():
    import time

    from overseer.operator.agents import COUNTS_INTERVAL

    rt, _ = setup()
    operator = Operator(rt)
    goal = rt.stores["goals"].get(("team", "fix-bug"))
    operator.goal_changed("MODIFIED", goal, None)
    due, _ = rt.agents._timers[("team", "coder")]
    assert due - time.monotonic() <= 1.0  # nothing written lately: shown within a second
    await rt.agents.stop()

    operator.agents._status_written[("team", "coder")] = time.monotonic()  # counts written just now
    operator.goal_changed("MODIFIED", goal, None)
    due, _ = rt.agents._timers[("team", "coder")]
    assert due - time.monotonic() > COUNTS_INTERVAL - 0.5  # the next write waits its turn
    await rt.agents.stop()
