"""Values the API server accepts that used to wedge a reconcile, with the operator running: the
goal that holds them still moves, and a canary goal beside it still finishes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from e2e.world import World


def test_status_times_with_fractions_and_offsets_do_not_stop_a_goal(world: World) -> None:
    """status.startedAt as another writer may put it (RFC 3339 with a fraction and an offset, which
    the schema's date-time takes): the operator used to fail on it at every reconcile, and the goal
    stayed Running past its timeout. Now it reads it, and the goal times out."""
    world.agent("coder")
    world.goal("slow", extra="  timeout: 30m")
    world.running_pod("slow")
    an_hour_ago = (datetime.now(timezone(timedelta(hours=2))) - timedelta(hours=1)).isoformat(timespec="microseconds")
    world.kubectl("patch", "goal", "slow", "-n", world.ns, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"startedAt": an_hour_ago}}))
    # an edit of the spec wakes the reconcile at once (the timeout is unchanged: 30 minutes)
    world.kubectl("patch", "goal", "slow", "-n", world.ns, "--type=merge", "-p", '{"spec": {"priority": 1}}')
    failed = world.wait_phase("slow", "Failed", timeout=60)
    assert world.condition("goal", "slow", "Complete")["reason"] == "Timeout"
    assert "spec.timeout 30m" in failed["status"]["message"]

    world.goal("canary")
    world.finish("canary", 0)
    world.wait_phase("canary", "Succeeded")
    assert not [e for e in world.events("slow") if e["reason"] == "ReconcileFailed"]
