"""Events are queued by reconciles and posted by the recorder's own workers."""

import asyncio

from overseer.kube import ApiError
from overseer.operator.events import DROPPED, EventRecorder


class SlowKube:
    field_manager = "overseer-operator"

    def __init__(self, fail_first=False):
        self.posted, self.fail_first = [], fail_first
        self.release = asyncio.Event()

    async def request(self, method, url, body=None):
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
    recorder = EventRecorder(kube, workers=1, busy=lambda: True, yield_seconds=0.001)
    recorder.start()
    recorder.record(GOAL, "Normal", "Dispatched", "one")
    await asyncio.sleep(0.5)
    assert len(kube.posted) == 1
    await recorder.stop()
