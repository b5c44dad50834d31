"""WorkQueue: one reconcile per key at a time, level-triggered, with per-key backoff."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Hashable

import pytest

from overseer.operator.workqueue import WorkQueue

DEADLINE = 1.0  # seconds; every wait below is expected to end in milliseconds


@pytest.fixture
async def queue() -> AsyncIterator[WorkQueue]:
    q = WorkQueue("test", max_backoff=0.01)
    yield q
    await q.stop()


class Recorder:
    """A reconcile function that counts its calls and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.calls: Counter[Hashable] = Counter()
        self.order: list[Hashable] = []
        self._changed = asyncio.Condition()

    async def __call__(self, key: Hashable) -> float | None:
        await self.record(key)
        return None

    async def record(self, key: Hashable) -> None:
        async with self._changed:
            self.calls[key] += 1
            self.order.append(key)
            self._changed.notify_all()

    async def wait_for(self, key: Hashable, count: int = 1) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.calls[key] >= count), DEADLINE)


async def test_a_key_waits_in_the_queue_only_once(queue):
    reconcile = Recorder()
    for _ in range(5):
        queue.add("a")
    queue.add("end")
    assert len(queue) == 2

    queue.start(reconcile, workers=1)
    await reconcile.wait_for("end")

    # One worker takes keys in order, so "a" is done by the time "end" is.
    assert reconcile.order == ["a", "end"]
    assert len(queue) == 0


async def test_a_key_added_during_its_reconcile_runs_again_afterwards(queue):
    started, release = asyncio.Event(), asyncio.Event()
    calls = Recorder()

    async def reconcile(key: Hashable) -> None:
        await calls.record(key)
        if calls.calls[key] == 1:
            started.set()
            await release.wait()

    queue.add("a")
    queue.start(reconcile, workers=2)
    await asyncio.wait_for(started.wait(), DEADLINE)

    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # remembered, not queued: no second worker may pick it up
    release.set()

    await calls.wait_for("a", 2)
    queue.add("end")
    await calls.wait_for("end")
    assert calls.calls["a"] == 2


async def test_one_key_is_never_reconciled_twice_at_once(queue):
    running: Counter[Hashable] = Counter()
    most: Counter[Hashable] = Counter()
    calls = Recorder()

    async def reconcile(key: Hashable) -> None:
        running[key] += 1
        most[key] = max(most[key], running[key])
        for _ in range(3):
            await asyncio.sleep(0)
        running[key] -= 1
        await calls.record(key)

    queue.start(reconcile, workers=8)
    for _ in range(50):
        for key in ("a", "b"):
            queue.add(key)
        await asyncio.sleep(0)

    await calls.wait_for("a", 2)
    await calls.wait_for("b", 2)
    assert most == {"a": 1, "b": 1}


async def test_different_keys_are_reconciled_in_parallel(queue):
    a_running = asyncio.Event()
    calls = Recorder()

    async def reconcile(key: Hashable) -> None:
        if key == "a":
            a_running.set()
            await asyncio.wait_for(calls.wait_for("b"), DEADLINE)  # only returns if "b" runs meanwhile
        await calls.record(key)

    queue.add("a")
    queue.add("b")
    queue.start(reconcile, workers=2)

    await calls.wait_for("a")
    assert calls.order == ["b", "a"]


async def test_add_after_runs_the_key_later(queue):
    reconcile = Recorder()
    queue.start(reconcile, workers=1)

    queue.add_after("a", 0.01)
    assert reconcile.calls["a"] == 0

    await reconcile.wait_for("a")


async def test_add_after_without_delay_adds_at_once(queue):
    queue.add_after("a", 0)

    assert len(queue) == 1


async def test_add_after_keeps_an_earlier_pending_add(queue):
    reconcile = Recorder()
    queue.start(reconcile, workers=1)

    queue.add_after("a", 0.01)
    queue.add_after("a", 60)  # would postpone "a" by a minute if the later add won

    await reconcile.wait_for("a")


async def test_add_after_brings_a_pending_add_forward(queue):
    reconcile = Recorder()
    queue.start(reconcile, workers=1)

    queue.add_after("a", 60)
    queue.add_after("a", 0.01)

    await reconcile.wait_for("a")


async def test_reconcile_asks_to_look_again_after_a_delay(queue):
    calls = Recorder()

    async def reconcile(key: Hashable) -> float | None:
        await calls.record(key)
        return 0.01 if calls.calls[key] == 1 else None

    queue.add("a")
    queue.start(reconcile, workers=1)

    await calls.wait_for("a", 2)


async def test_a_failed_reconcile_is_retried(queue):
    calls = Recorder()

    async def reconcile(key: Hashable) -> None:
        await calls.record(key)
        if calls.calls[key] <= 3:
            raise RuntimeError("API server unavailable")

    queue.add("a")
    queue.start(reconcile, workers=1)

    await calls.wait_for("a", 4)


async def test_failures_back_off_longer_each_time_up_to_the_cap(monkeypatch):
    queue = WorkQueue("test", max_backoff=5.0)
    delays: list[float] = []
    schedule = queue.add_after

    def add_after(key: Hashable, delay: float) -> None:
        delays.append(delay)
        schedule(key, 0.001)  # keep the test fast; the delay asked for is what is checked

    monkeypatch.setattr(queue, "add_after", add_after)
    calls = Recorder()

    async def reconcile(key: Hashable) -> None:
        await calls.record(key)
        if calls.calls[key] <= 5:
            raise RuntimeError("API server unavailable")

    queue.add("a")
    queue.start(reconcile, workers=1)
    try:
        await calls.wait_for("a", 6)
    finally:
        await queue.stop()

    assert delays == sorted(delays)
    assert delays[0] < delays[1] < delays[2]
    assert delays[-1] == 5.0


async def test_a_success_resets_the_backoff(monkeypatch):
    queue = WorkQueue("test", max_backoff=300.0)
    delays: list[float] = []
    schedule = queue.add_after

    def add_after(key: Hashable, delay: float) -> None:
        delays.append(delay)
        schedule(key, 0.001)

    monkeypatch.setattr(queue, "add_after", add_after)
    calls = Recorder()
    outcomes = iter([RuntimeError, RuntimeError, None, RuntimeError])

    async def reconcile(key: Hashable) -> None:
        await calls.record(key)
        error = next(outcomes, RuntimeError)
        if error is not None:
            raise error("conflict")

    queue.add("a")
    queue.start(reconcile, workers=1)
    try:
        await calls.wait_for("a", 3)
        queue.add("a")
        await calls.wait_for("a", 4)
        await asyncio.wait_for(_until(lambda: len(delays) == 3), DEADLINE)
    finally:
        await queue.stop()

    assert delays[2] == delays[0] < delays[1]


async def test_stop_cancels_pending_adds():
    queue = WorkQueue("test")
    reconcile = Recorder()
    queue.start(reconcile, workers=1)
    queue.add_after("a", 0.01)

    await queue.stop()
    await asyncio.sleep(0.05)

    assert reconcile.calls["a"] == 0
    assert len(queue) == 0


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


def sample(name: str, queue: str, suffix: str = "") -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name + suffix, {"kind": queue}) or 0.0


async def test_a_queue_exports_client_gos_work_queue_metrics() -> None:
    queue = WorkQueue("metrics-test", max_backoff=0.01)
    gate, failed_once = asyncio.Event(), False

    async def reconcile(key: Hashable) -> float | None:
        nonlocal failed_once
        if key == "slow":
            await gate.wait()
        if key == "flaky" and not failed_once:
            failed_once = True
            raise RuntimeError("API server unavailable")
        return None

    for key in ("slow", "flaky", "flaky"):
        queue.add(key)
    assert sample("overseer_workqueue_adds_total", "metrics-test") == 2  # a key waits only once
    assert sample("overseer_workqueue_depth", "metrics-test") == 2
    try:
        queue.start(reconcile, workers=2)
        await asyncio.sleep(0.2)
        # "slow" is still running: the longest-running gauge says for how long.
        assert 0.15 <= sample("overseer_workqueue_longest_running_processor_seconds", "metrics-test") < 5
        assert sample("overseer_workqueue_unfinished_work_seconds", "metrics-test") >= 0.15
        assert sample("overseer_workqueue_retries_total", "metrics-test") == 1
        gate.set()
        await asyncio.sleep(0.05)
    finally:
        await queue.stop()
    assert sample("overseer_workqueue_depth", "metrics-test") == 0
    assert sample("overseer_workqueue_longest_running_processor_seconds", "metrics-test") == 0
    # slow, flaky (failed), flaky (retried): three reconciles timed, three waits in the queue.
    assert sample("overseer_workqueue_work_duration_seconds", "metrics-test", "_count") == 3
    assert sample("overseer_workqueue_queue_duration_seconds", "metrics-test", "_count") == 3
    assert sample("overseer_workqueue_work_duration_seconds", "metrics-test", "_sum") >= 0.2
