"""Events are queued by reconciles and posted by the recorder's own workers."""

import asyncio

from overseer.kube import ApiError
from overseer.operator.events import DROPPED, EventRecorder


class SlowKube:
    field_manager = "overseer-operator"

    def __init__(self, fail_first=False):
        self.posted, self.fail_first = [], fail_first
        self.release = asyncio.Event()

    async def request(self, method, url, body=None, **_):
        await self.release.wait()
        if self.fail_first and not self.posted:
            self.posted.append(None)
            raise ApiError(500, "InternalError", "etcd hiccup", method, url)
        self.posted.append((url, body))


GOAL = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
        "metadata": {"name": "fix-bug", "namespace": "team", "uid": "u1"}}


async def test_record_returns_at_once_and_stop_posts_what_waits():
    kube = SlowKube()
    recorder = EventRecorder(kube, workers=1)
    recorder.start()
    recorder.record(GOAL, "Normal", "Dispatched", "attempt 1 running in pod fix-bug-1")
    recorder.record(GOAL, "Warning", "AttemptFailed", "x" * 5000)
    assert kube.posted == []  # nothing waited on the API server
    kube.release.set()
    await recorder.stop(timeout=5)
    (url, first), (_, second) = kube.posted
    assert url == "/api/v1/namespaces/team/events"
    assert first["involvedObject"] == {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "fix-bug",
                                       "namespace": "team", "uid": "u1"}
    assert (first["reason"], first["type"], second["type"]) == ("Dispatched", "Normal", "Warning")
    assert len(second["message"]) == 1024


async def test_a_failed_post_does_not_stop_the_next_ones():
    kube = SlowKube(fail_first=True)
    kube.release.set()
    recorder = EventRecorder(kube, workers=1)
    recorder.start()
    recorder.record(GOAL, "Normal", "Dispatched", "one")
    recorder.record(GOAL, "Normal", "Succeeded", "two")
    await recorder.stop(timeout=5)
    assert [b["reason"] for _, b in kube.posted[1:]] == ["Succeeded"]


async def test_a_full_queue_drops_and_counts_instead_of_blocking_the_reconcile():
    kube = SlowKube()
    recorder = EventRecorder(kube, workers=1, limit=2)
    before = DROPPED._value.get()
    for i in range(5):
        recorder.record(GOAL, "Normal", "Dispatched", str(i))
    assert DROPPED._value.get() - before == 3


async def test_events_wait_while_reconciles_are_queued_then_go():
    kube = SlowKube()
    kube.release.set()
    queued = [1]
    recorder = EventRecorder(kube, workers=1, busy=lambda: bool(queued), yield_seconds=0.01)
    recorder.start()
    recorder.record(GOAL, "Normal", "Dispatched", "one")
    await asyncio.sleep(0.2)
    assert kube.posted == []
    queued.clear()
    await asyncio.sleep(0.1)
    assert [b["reason"] for _, b in kube.posted] == ["Dispatched"]
    await recorder.stop()


async def test_an_event_waits_a_bounded_time_however_busy():
    kube = SlowKube()
    kube.release.set()
    recorder = EventRecorder(kube, workers=1, busy=lambda: True, yield_seconds=0.001, hold_seconds=0.1)
    recorder.start()
    recorder.record(GOAL, "Normal", "Dispatched", "one")
    await asyncio.sleep(0.5)
    assert len(kube.posted) == 1
    await recorder.stop()


class Recording:
    """Answers at once and keeps every request, as the API server would see them."""

    field_manager = "overseer-operator"

    def __init__(self):
        self.requests = []

    async def request(self, method, url, body=None, content_type="application/json", answer=True):
        self.requests.append((method, url, body))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def goal(name, agent="coder"):
    return {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
            "status": {"agent": agent}}


AGENT = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Agent",
         "metadata": {"name": "coder", "namespace": "team", "uid": "uid-coder"}}


async def test_the_same_event_again_is_one_event_whose_count_grows_written_at_most_once_per_flush():
    kube, clock = Recording(), Clock()
    recorder = EventRecorder(kube, workers=1, clock=clock)
    recorder.start()
    recorder.record(GOAL, "Warning", "HeartbeatLost", "no heartbeat for 60 s")
    await asyncio.sleep(0.05)
    for _ in range(4):  # within one flush interval: counted, not written yet
        recorder.record(GOAL, "Warning", "HeartbeatLost", "no heartbeat for 60 s")
    await asyncio.sleep(0.05)
    assert [m for m, _, _ in kube.requests] == ["POST"]
    await recorder.stop()  # what is counted is written before the operator ends
    (post, url, created), (patch, patch_url, update) = kube.requests
    assert (post, patch) == ("POST", "PATCH")
    assert patch_url == f"/api/v1/namespaces/team/events/{created['metadata']['name']}"
    assert update["count"] == 5 and update["message"] == "no heartbeat for 60 s"


async def test_an_object_that_keeps_flapping_is_limited_as_client_go_limits_it():
    kube, clock = Recording(), Clock()
    recorder = EventRecorder(kube, workers=1, clock=clock)
    recorder.start()
    for i in range(40):
        recorder.record(GOAL, "Normal", "Dispatched", f"attempt {i} running")
    clock.now += 300  # one more after five minutes
    recorder.record(GOAL, "Normal", "Dispatched", "attempt 40 running")
    recorder.record(GOAL, "Normal", "Dispatched", "attempt 41 running")
    await recorder.stop()
    messages = [body["message"] for _, _, body in kube.requests]
    assert messages == [f"attempt {i} running" for i in [*range(25), 40]]


async def test_a_burst_of_goals_of_one_agent_folds_into_one_event_on_the_agent():
    kube, clock = Recording(), Clock()
    recorder = EventRecorder(kube, workers=1, clock=clock,
                             fold_into=lambda obj: AGENT if obj["kind"] == "Goal" else None)
    recorder.start()
    for i in range(1000):
        recorder.record(goal(f"g-{i:04d}"), "Normal", "Dispatched", f"attempt 1 running in pod g-{i:04d}-1")
    await recorder.stop()
    posts = [body for method, _, body in kube.requests if method == "POST"]
    # The first goals of the burst keep their own Event, as one applied alone would.
    assert [b["involvedObject"]["name"] for b in posts[:10]] == [f"g-{i:04d}" for i in range(10)]
    assert len(kube.requests) <= 12  # not one write per goal
    burst = [b for b in posts if b["involvedObject"]["kind"] == "Agent"]
    assert len(burst) == 1 and burst[0]["involvedObject"]["uid"] == "uid-coder"
    last = kube.requests[-1][2]
    assert last["count"] == 990
    assert last["message"].startswith("Dispatched for 990 goals of this agent in a burst (g-0010 … g-0999")
    assert last["message"].endswith("goal g-0999: attempt 1 running in pod g-0999-1")


async def test_goals_dispatched_one_at_a_time_each_keep_their_own_event():
    kube, clock = Recording(), Clock()
    recorder = EventRecorder(kube, workers=1, clock=clock, fold_into=lambda obj: AGENT)
    recorder.start()
    for i in range(30):
        recorder.record(goal(f"g-{i}"), "Normal", "Dispatched", "attempt 1 running")
        clock.now += 10  # one goal every ten seconds
    await recorder.stop()
    assert [b["involvedObject"]["name"] for _, _, b in kube.requests] == [f"g-{i}" for i in range(30)]


def test_an_event_on_an_object_with_the_longest_name_has_a_valid_name():
    from overseer.operator.events import event_body

    body = event_body({"kind": "Goal", "metadata": {"name": "g" * 253, "namespace": "team"}}, "Normal", "Dispatched",
                      "x", "overseer-operator")
    assert len(body["metadata"]["name"]) == 253 and body["involvedObject"]["name"] == "g" * 253
