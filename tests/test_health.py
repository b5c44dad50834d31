"""The operator's /healthz and /readyz: a wedge is caught, a quiet cluster or a standby is not
mistaken for one, and only the filled, leading replica is ready."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from overseer.operator.health import (INFORMER_SILENCE_SECONDS, LOOP_STALL_SECONDS, HealthServer, InformerState,
                                      Snapshot, liveness, readiness, task_state)

NOW = 10_000.0


def informer(name: str = "Informer(goals in team-a)", synced: bool = True, silent: float = 1.0,
             error: str = "", stopped: str | None = None) -> InformerState:
    return InformerState(name, synced, NOW - silent, error, stopped)


def snap(*informers: InformerState, loop_age: float = 0.5, started: bool = True, lease: str | None = None,
         leading: bool = False, holder: str | None = None, reconciling: bool = False) -> Snapshot:
    return Snapshot(now=NOW, loop_tick=NOW - loop_age, informers=informers, started=started, lease=lease,
                    leading=leading, holder=holder, reconciling=reconciling)


# ---- liveness -------------------------------------------------------------------------------

def test_a_working_operator_is_alive():
    assert liveness(snap(informer(), informer("Informer(pods in team-a)"))) == (True, "ok")


def test_a_quiet_cluster_is_not_a_wedge():
    # No events for minutes: each watch still ends and restarts within the server's timeout.
    assert liveness(snap(informer(silent=INFORMER_SILENCE_SECONDS - 1)))[0]


def test_an_informer_that_stopped_making_progress_fails_liveness():
    ok, reason = liveness(snap(informer(), informer("Informer(pods in team-a)", silent=INFORMER_SILENCE_SECONDS + 5)))

    assert not ok
    assert reason.startswith("Informer(pods in team-a) made no progress for")


def test_an_informer_whose_task_ended_fails_liveness():
    ok, reason = liveness(snap(informer(stopped="RuntimeError: boom")))

    assert (ok, reason) == (False, "Informer(goals in team-a) stopped: RuntimeError: boom")


def test_a_blocked_event_loop_fails_liveness():
    ok, reason = liveness(snap(informer(), loop_age=LOOP_STALL_SECONDS + 12))

    assert not ok and reason == f"event loop blocked for {LOOP_STALL_SECONDS + 12:.0f} s"


def test_an_api_server_that_refuses_is_not_a_wedge():
    # The informer keeps trying (and records each failure): restarting the process would not help.
    assert liveness(snap(informer(synced=False, silent=3, error="403 Forbidden")))[0]


def test_a_standby_replica_without_informers_is_alive():
    assert liveness(snap(started=False, lease="overseer-system/overseer-operator"))[0]


# ---- readiness ------------------------------------------------------------------------------

def test_ready_once_every_cache_is_filled():
    assert readiness(snap(informer(), informer("Informer(pods in team-a)"))) == (True, "ok")


def test_not_ready_while_a_cache_fills_naming_it_and_its_last_error():
    ok, reason = readiness(snap(informer(), informer("Informer(pods in team-a)", synced=False, error="403 Forbidden")))

    assert (ok, reason) == (False, "caches not filled: Informer(pods in team-a): 403 Forbidden")


def test_not_ready_before_the_operator_starts():
    assert readiness(snap(started=False)) == (False, "starting")


def test_a_standby_replica_is_ready_once_its_caches_are_filled_and_names_the_holder():
    lease = "ops/overseer-operator"
    assert readiness(snap(informer(synced=False), lease=lease, holder="pod-a_1234"))[0] is False

    ok, reason = readiness(snap(informer(), lease=lease, holder="pod-a_1234"))

    # Were standbys never ready, a rolling update (maxUnavailable 0) would wait for them for ever.
    assert (ok, reason) == (True, "standby: caches filled, waiting for Lease ops/overseer-operator (held by pod-a_1234)")


def test_the_leader_is_ready_once_filled_but_not_before():
    lease = "ops/overseer-operator"
    assert readiness(snap(informer(synced=False), lease=lease, leading=True))[0] is False
    assert readiness(snap(informer(), lease=lease, leading=True)) == (True, "ok")


def test_a_replica_that_lost_its_lease_is_not_ready():
    assert readiness(snap(informer(), lease="ops/overseer-operator", leading=False, reconciling=True)) == (
        False, "lost Lease ops/overseer-operator")


# ---- the server -----------------------------------------------------------------------------

def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def server():
    state = {"snapshot": snap(informer(synced=False))}
    health = HealthServer(0, lambda: state["snapshot"]).start()
    yield state, f"http://127.0.0.1:{health.port}"
    health.stop()


def test_the_server_answers_200_or_503_with_the_reason(server):
    state, url = server

    assert get(url + "/healthz") == (200, "ok\n")
    assert get(url + "/readyz") == (503, "caches not filled: Informer(goals in team-a)\n")
    state["snapshot"] = snap(informer())
    assert get(url + "/readyz") == (200, "ok\n")
    state["snapshot"] = snap(informer(), loop_age=LOOP_STALL_SECONDS * 3)
    assert get(url + "/healthz")[0] == 503
    assert get(url + "/metrics")[0] == 404


async def test_task_state_says_why_a_task_ended():
    async def boom() -> None:
        raise RuntimeError("boom")

    running = asyncio.create_task(asyncio.sleep(10))
    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    assert task_state(running) is None
    assert task_state(failed) == "RuntimeError: boom"
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert task_state(running) == "cancelled"
