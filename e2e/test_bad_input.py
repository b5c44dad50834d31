"""Values the API server accepts that used to wedge a reconcile, with the operator running: the
goal that holds them still moves, and a canary goal beside it still finishes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from e2e.harness import wait_for
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


def test_a_quota_that_leaves_no_room_for_an_agents_objects_is_reported_with_the_fix(world: World) -> None:
    """A ResourceQuota the user set refuses the NetworkPolicy the operator makes for a new Agent:
    the Agent is not Ready (ResourcesRefused), and its condition and a Warning Event name the object
    refused and the quota to change; goals of the other Agent go on, and once the quota is gone the
    Agent becomes Ready."""
    world.agent("coder")
    world.wait_condition("agent", "coder", "Ready", "True")
    world.apply("""
apiVersion: v1
kind: ResourceQuota
metadata: {name: team-limits}
spec: {hard: {count/networkpolicies.networking.k8s.io: "1"}}
""")
    # the quota controller has counted coder's NetworkPolicy: from now on a second one is refused
    wait_for(lambda: ((world.get("resourcequota", "team-limits") or {}).get("status") or {}).get("used"),
             timeout=60, description="ResourceQuota team-limits counted")
    world.agent("reviewer")
    world.goal("blocked", agent="reviewer")

    ready = world.wait_condition("agent", "reviewer", "Ready", "False", "ResourcesRefused", timeout=60)
    message = ready["message"]
    assert message.startswith(f"Agent {world.ns}/reviewer: goal pods cannot start until"), message
    assert "networkpolicies/overseer-agent-reviewer" in message and "exceeded quota: team-limits" in message
    assert f"to fix it, raise or remove ResourceQuota team-limits in namespace {world.ns}" in message
    [event] = [e for e in world.events("reviewer") if e["reason"] == "ResourcesRefused"]
    assert event["type"] == "Warning" and event["message"] == message
    assert not [e for e in world.events("coder") if e["reason"] in ("ResourcesRefused", "ReconcileFailed")]

    world.goal("canary")
    world.finish("canary", 0)
    world.wait_phase("canary", "Succeeded")
    assert world.phase("blocked") == "Pending"

    world.kubectl("delete", "resourcequota", "team-limits", "-n", world.ns)
    world.wait_condition("agent", "reviewer", "Ready", "True", timeout=90)
    world.running_pod("blocked")


def test_a_capability_quoting_a_megabyte_of_its_spec_still_gets_its_condition(world: World) -> None:
    """spec.inputSchema is free-form, so the API server takes a megabyte string in it. The
    operator's message quoted the bad value whole, in Ready and in Stalled: the status write
    came to 3 MB, etcd refused every one, and the Capability never showed why it was unusable."""
    big = "x" * 1_000_000
    world.kubectl("create", "-n", world.ns, "-f", "-", input=json.dumps({
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Capability", "metadata": {"name": "huge"},
        "spec": {"description": "Run the tests", "command": {"run": ["pytest"]},
                 "inputSchema": {"type": "object", "properties": {"path": {"type": big}}}}}))
    ready = world.wait_condition("capability", "huge", "Ready", "False", "InvalidInputSchema", timeout=60)
    assert ready["message"].startswith("spec.inputSchema is not a valid JSON Schema: 'xxx")
    assert "characters left out" in ready["message"] and len(ready["message"]) <= 1024
    assert not [e for e in world.events("huge") if e["reason"] == "ReconcileFailed"]
