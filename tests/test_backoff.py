"""One retry layer for model calls: the SDK retries nothing and the loop backs off with jitter,
honouring retry-after. Counted against the scripted model through the real SDK."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from overseer.agent import backoff
from overseer.testing.scripted_model import ScriptedModelServer
from tests.test_loop_unit import TASK, make_loop, messages_requests

OUTAGE = {"conversations": {"default": ["never sent"]}, "faults": {"every": 1, "status": 529}}


def error(**headers: str) -> SimpleNamespace:
    return SimpleNamespace(response=SimpleNamespace(headers=headers))


@pytest.fixture
def pod_client(monkeypatch: pytest.MonkeyPatch):
    """The client a goal pod builds (backoff.model_client), pointed at a scripted model."""
    def make(server: ScriptedModelServer):
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        return backoff.model_client()
    return make


@pytest.mark.parametrize("status", [529, 500, 429])
async def test_an_outage_costs_the_loops_attempts_and_no_more(tmp_path: Path, pod_client, status: int) -> None:
    async with ScriptedModelServer({**OUTAGE, "faults": {"every": 1, "status": status}}) as server:
        loop = make_loop(pod_client(server), tmp_path, breaker_failures=4, breaker_base_delay=0.001)
        outcome = await loop.run(TASK)
    assert (outcome.reason, outcome.retryable) == ("ModelUnavailable", True)
    # With the SDK's own 4 retries under the loop's 4 attempts this was 20 calls.
    assert [r.status for r in messages_requests(server)] == [status] * 4


async def test_a_cut_connection_is_retried_by_the_loop_once_per_attempt(tmp_path: Path, pod_client) -> None:
    scenario = {"follow_history": True, "conversations": {"default": [
        {"fault": {"drop_after_events": 1}}, {"reply": [{"text": "Done after the cut."}]}]}}
    async with ScriptedModelServer(scenario) as server:
        loop = make_loop(pod_client(server), tmp_path, breaker_base_delay=0.001)
        outcome = await loop.run(TASK)
    assert (outcome.success, outcome.result) == (True, "Done after the cut.")
    assert [r.status for r in messages_requests(server)] == [0, 200]


async def test_retry_after_is_waited_out_before_the_next_call(tmp_path: Path, pod_client) -> None:
    scenario = {"follow_history": True, "conversations": {"default": [
        {"fault": {"status": 429, "retry_after": 0.6}}, {"reply": [{"text": "ok"}]}]}}
    async with ScriptedModelServer(scenario) as server:
        loop = make_loop(pod_client(server), tmp_path, breaker_base_delay=0.001)
        started = time.monotonic()
        assert (await loop.run(TASK)).success
    assert time.monotonic() - started >= 0.6
    assert [r.status for r in messages_requests(server)] == [429, 200]


def test_the_wait_doubles_with_jitter_up_to_the_cap() -> None:
    for failures, ceiling in ((1, 1.0), (2, 2.0), (4, 8.0), (9, 60.0)):
        waits = {backoff.delay(failures, error(), base=1.0, cap=60.0) for _ in range(50)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (failures, waits)
        assert len(waits) > 40, "pods an outage hit together must not retry in step"


def test_the_apis_retry_after_wins_and_is_capped() -> None:
    assert backoff.delay(1, error(**{"retry-after": "7"}), base=1.0, cap=60.0) == 7.0
    assert backoff.delay(1, error(**{"retry-after-ms": "250", "retry-after": "1"}), base=1.0, cap=60.0) == 0.25
    assert backoff.delay(1, error(**{"retry-after": "3600"}), base=1.0, cap=60.0) == 60.0
    # an HTTP date or garbage: our own backoff
    assert 0.5 <= backoff.delay(1, error(**{"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}), 1.0, 60.0) <= 1.0
    assert 0.5 <= backoff.delay(1, SimpleNamespace(), 1.0, 60.0) <= 1.0
