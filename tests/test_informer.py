"""The informer lists, then watches from the list's version, and lists again when the watch
expires, reporting objects that vanished in between as deleted."""

import asyncio

import pytest

from overseer.operator.informer import Informer
from overseer.operator.store import Store


def obj(name, rv, ns="team", phase=None):
    raw = {"metadata": {"namespace": ns, "name": name, "resourceVersion": str(rv)}}
    if phase:
        raw["status"] = {"phase": phase}
    return raw


class FakeKube:
    """Answers list pages and watch streams from scripts; records what was asked."""

    def __init__(self, lists, watches):
        self.lists, self.watches = list(lists), list(watches)
        self.asked = []

    async def request(self, method, url, params=None):
        self.asked.append(("LIST", url, dict(params or {})))
        return self.lists.pop(0)

    async def watch(self, url, params=None):
        self.asked.append(("WATCH", url, dict(params or {})))
        if not self.watches:
            await asyncio.sleep(3600)
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


def page(items, rv, token=None):
    meta = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    return {"kind": "GoalList", "metadata": meta, "items": items}


async def run_until(informer, kube, done):
    task = asyncio.create_task(informer.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if done():
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_lists_in_pages_then_watches_from_the_lists_version():
    kube = FakeKube(
        lists=[page([obj("a", 5)], 9, token="next"), page([obj("b", 7)], 10)],
        watches=[[{"type": "MODIFIED", "object": {"kind": "Goal", **obj("a", 11, phase="Running")}},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
                  {"type": "DELETED", "object": obj("b", 16)}]],
    )
    store, seen = Store(), []
    informer = Informer(kube, "overseer.dev/v1alpha1", "goals", store, lambda e, raw, old: seen.append((e, raw["metadata"]["name"])),
                        namespace="team", label_selector="x=y")
    await run_until(informer, kube, lambda: len(seen) == 4)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert informer.synced.is_set()
    assert store.get(("team", "a"))["status"]["phase"] == "Running"
    assert store.get(("team", "b")) is None
    lists = [a for a in kube.asked if a[0] == "LIST"]
    assert lists[1][2]["continue"] == "next" and lists[0][2]["labelSelector"] == "x=y"
    watch = next(a for a in kube.asked if a[0] == "WATCH")
    assert watch[2]["resourceVersion"] == "10" and watch[1].endswith("/namespaces/team/goals")


@pytest.mark.asyncio
async def test_expired_watch_lists_again_and_reports_what_vanished_meanwhile():
    kube = FakeKube(
        lists=[page([obj("a", 5), obj("b", 6)], 10), page([obj("a", 5), obj("c", 20)], 21)],
        watches=[[{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}]],
    )
    store, seen = Store(), []
    informer = Informer(kube, "overseer.dev/v1alpha1", "goals", store, lambda e, raw, old: seen.append((e, raw["metadata"]["name"])))
    await run_until(informer, kube, lambda: len(seen) == 4)
    # a unchanged on the second listing: not reported again
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("DELETED", "b")]
    assert sorted(store.keys()) == [("team", "a"), ("team", "c")]


@pytest.mark.asyncio
async def test_interrupted_watch_resumes_from_the_last_version_seen_without_listing():
    kube = FakeKube(
        lists=[page([obj("a", 5)], 10)],
        watches=[[{"type": "MODIFIED", "object": obj("a", 12)}, ConnectionResetError("peer reset")],
                 [{"type": "MODIFIED", "object": obj("a", 13)}]],
    )
    seen = []
    informer = Informer(kube, "v1", "pods", Store(), lambda e, raw, old: seen.append(raw["metadata"]["resourceVersion"]))
    await run_until(informer, kube, lambda: len(seen) == 3)
    assert seen == ["5", "12", "13"]
    watches = [a[2]["resourceVersion"] for a in kube.asked if a[0] == "WATCH"]
    assert watches[:2] == ["10", "12"]
    assert sum(1 for a in kube.asked if a[0] == "LIST") == 1


@pytest.mark.asyncio
async def test_namespace_filter_drops_objects_of_other_namespaces():
    kube = FakeKube(lists=[page([obj("a", 1, ns="team-a"), obj("b", 2, ns="ops")], 3)], watches=[])
    store = Store()
    informer = Informer(kube, "v1", "pods", store, lambda *a: None, accept=lambda ns: ns.startswith("team-"))
    await run_until(informer, kube, lambda: informer.synced.is_set())
    assert store.keys() == [("team-a", "a")]
    # listed items get the kind and apiVersion that list answers leave out (Events need them)
    assert (store.get(("team-a", "a"))["kind"], store.get(("team-a", "a"))["apiVersion"]) == ("Goal", "v1")


@pytest.mark.asyncio
async def test_progress_is_recorded_for_lists_events_and_failures_alike():
    # The liveness probe reads last_progress: an informer retrying a refusing API server is
    # working, and its last error is what readiness reports until a list succeeds.
    class RefusingOnce(FakeKube):
        async def request(self, method, url, params=None):
            if not self.asked:
                self.asked.append(("LIST", url, {}))
                raise RuntimeError("403 Forbidden")
            return await super().request(method, url, params)

    kube = RefusingOnce(lists=[page([obj("a", 5)], 10)], watches=[[{"type": "MODIFIED", "object": obj("a", 12)}]])
    informer = Informer(kube, "v1", "pods", Store(), lambda *a: None)
    informer.last_progress = 0.0
    seen = {}

    def refused_then_watching():
        if informer.last_error and "error" not in seen:
            seen["error"] = (informer.last_error, informer.last_progress, informer.synced.is_set())
        return informer.version == "12"

    await run_until(informer, kube, refused_then_watching)

    error, failed_at, synced = seen["error"]
    assert (error, synced) == ("403 Forbidden", False) and failed_at > 0
    assert informer.synced.is_set() and informer.last_error == "" and informer.last_progress > failed_at


def test_reconnect_delays_double_and_are_spread_so_watchers_do_not_return_in_step() -> None:
    from overseer.kube import Backoff

    firsts = []
    for _ in range(200):  # 200 goal pods whose watch broke at the same moment
        b = Backoff(first=0.5, cap=4)
        delays = [b.next() for _ in range(6)]
        firsts.append(delays[0])
        assert [0.25 <= delays[0] <= 0.5, 0.5 <= delays[1] <= 1, 1 <= delays[2] <= 2] == [True] * 3
        assert all(2 <= d <= 4 for d in delays[3:]), delays  # capped
        b.reset()
        assert b.next() <= 0.5
    assert len({round(f, 3) for f in firsts}) > 100, "the first retries spread over the interval"


@pytest.mark.asyncio
async def test_a_watch_refused_by_a_busy_api_server_is_tried_again_when_it_asks_without_listing(monkeypatch):
    from overseer.kube import ApiError

    slept = []
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        if seconds != 0.01:  # run_until's own polling
            slept.append(seconds)
        await real_sleep(0)
    monkeypatch.setattr("overseer.operator.informer.asyncio.sleep", sleep)
    busy = ApiError(429, "TooManyRequests", "too many requests", "WATCH", "/api/v1/pods", retry_after=1.0)
    starting = ApiError(503, "ServiceUnavailable", "not ready", "WATCH", "/api/v1/pods")
    kube = FakeKube(lists=[page([obj("a", 5)], 10)],
                    watches=[[busy], [starting], [{"type": "MODIFIED", "object": obj("a", 12)}]])
    seen = []
    informer = Informer(kube, "v1", "pods", Store(), lambda e, raw, old: seen.append(raw["metadata"]["resourceVersion"]))
    await run_until(informer, kube, lambda: len(seen) == 2)
    assert seen == ["5", "12"]
    assert sum(1 for a in kube.asked if a[0] == "LIST") == 1  # no relist for each refusal
    assert [a[2]["resourceVersion"] for a in kube.asked if a[0] == "WATCH"][:3] == ["10", "10", "10"]
    assert slept[0] >= 1.0  # the Retry-After of the 429
    assert 0 < slept[1] <= 1.0  # the backoff's own delay when the server names none


@pytest.mark.asyncio
async def test_each_listed_page_is_in_the_store_before_the_next_is_asked_for():
    # Ten thousand objects parsed at once, before the transform slims them, would be the
    # operator's peak memory after every restart.
    store = Store()
    kube = FakeKube(lists=[page([obj("a", 5), obj("b", 6)], 9, token="next"), page([obj("c", 7)], 10)], watches=[])
    in_store_when_asked = []
    request = kube.request

    async def counting(method, url, params=None):
        in_store_when_asked.append(len(store))
        return await request(method, url, params)

    kube.request = counting
    informer = Informer(kube, "v1", "pods", store, lambda *a: None,
                        transform=lambda raw: {"metadata": raw["metadata"], "slim": True})
    await run_until(informer, kube, lambda: informer.synced.is_set())
    assert in_store_when_asked == [0, 2]
    assert sorted(store.keys()) == [("team", "a"), ("team", "b"), ("team", "c")]
    assert all(raw["slim"] for raw in store.values())
