"""A goal whose agent stops reporting gets its pod replaced."""

from __future__ import annotations

import pytest

from e2e.harness import wait_for
from e2e.world import World


@pytest.fixture
def operator_env() -> dict[str, str]:
    return {"OVERSEER_HEARTBEAT_TIMEOUT_SECONDS": "3"}


def test_a_silent_agent_is_replaced_then_the_goal_fails(world: World) -> None:
    world.agent("coder")
    world.goal("silent", retries=1)  # no agent process runs for its pods: no heartbeat ever comes
    first = world.running_pod("silent")
    wait_for(lambda: world.get("goal", "silent")["status"].get("attempt") == 2, timeout=30,
             description="the silent pod replaced by attempt 2")
    assert world.get("pod", first) is None or world.get("pod", first)["metadata"].get("deletionTimestamp")
    failed = world.wait_phase("silent", "Failed", timeout=30)
    assert world.condition("goal", "silent", "Complete")["reason"] == "RetriesExhausted"
    assert "HeartbeatLost" in {e["reason"] for e in world.events("silent")}
    assert "PodDeleted" in failed["status"]["message"] or "PodLost" in failed["status"]["message"]
