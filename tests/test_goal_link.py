"""The agent's status writes to its Goal (GoalLink), against an in-memory API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from overseer.agent.goal_link import GoalLink


class StatusServer:
    """What GoalLink uses of Kube: the Goal, a watch that stays quiet, status writes recorded."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, dict[str, Any]]] = []

    async def get(self, url_path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return {"metadata": {"name": "fix-ci", "namespace": "team-a", "resourceVersion": "1"}, "spec": {}}

    async def watch(self, url_path: str, params: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}

    async def request(self, method: str, url_path: str, *, body: Any = None, content_type: str = "",
                      params: dict[str, str] | None = None) -> dict[str, Any]:
        assert (method, url_path) == ("PATCH", "/apis/overseer.dev/v1alpha1/namespaces/team-a/goals/fix-ci/status")
        self.writes.append((time.monotonic(), body["status"]))
        return body


async def test_a_fast_loop_writes_its_latest_status_at_most_once_per_interval() -> None:
    server = StatusServer()
    link = GoalLink(server, "team-a", "fix-ci", min_write_interval=0.2)  # type: ignore[arg-type]
    link.start()
    try:
        started = time.monotonic()
        for i in range(1, 61):  # 60 reports in about 0.6 s
            await link.report(iteration=i, lastTool=f"noop {i}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    finally:
        await link.stop()
    times = [t for t, _ in server.writes]
    assert 2 <= len(times) <= 1 + (time.monotonic() - started) / 0.2
    assert all(b - a >= 0.19 for a, b in zip(times, times[1:]))
    assert server.writes[-1][1]["iteration"] == 60 and server.writes[-1][1]["lastTool"] == "noop 60"


async def test_flush_writes_at_once_without_waiting_for_the_interval() -> None:
    server = StatusServer()
    link = GoalLink(server, "team-a", "fix-ci", min_write_interval=60)  # type: ignore[arg-type]
    link.start()
    try:
        await link.report(iteration=1)
        assert await link.flush(timeout=2)
        await link.report(iteration=2, result="done")
        started = time.monotonic()
        assert await link.flush(timeout=2)
        assert time.monotonic() - started < 1
    finally:
        await link.stop()
    assert [status["iteration"] for _, status in server.writes] == [1, 2]
    assert server.writes[-1][1]["result"] == "done"


def test_the_knowledge_base_audit_names_the_user_the_api_server_stamped_not_the_client_tool() -> None:
    link = GoalLink(StatusServer(), "team-a", "fix-ci")  # type: ignore[arg-type]
    annotate = {"manager": "kubectl-annotate", "time": "2026-12-01T10:00:00Z",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/deny": {}}}}}
    link.goal = {"metadata": {"name": "fix-ci", "managedFields": [annotate], "annotations": {
        "overseer.dev/deny": "bash-1", "overseer.dev/decided-by": "system:serviceaccount:team-a:reviewer"}}}
    assert link.decision("bash-1") == ("denied", "")
    assert link.decided_by("bash-1") == ("system:serviceaccount:team-a:reviewer", "2026-12-01T10:00:00Z")
    del link.goal["metadata"]["annotations"]["overseer.dev/decided-by"]  # the admission policies are missing
    assert link.decided_by("bash-1") == ("unverified field manager kubectl-annotate", "2026-12-01T10:00:00Z")
