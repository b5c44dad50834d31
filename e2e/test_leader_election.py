"""Several operator replicas with --leader-elect: the holder of the Lease reconciles, another
takes over when it dies or shuts down, and one that loses its Lease stops."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from e2e.harness import free_port, http_get, wait_for
from e2e.world import FAST, World

# Short lease timings, so that a take-over happens within seconds.
LEASE = {**FAST, "OVERSEER_LEASE_DURATION_SECONDS": "4", "OVERSEER_LEASE_RENEW_DEADLINE_SECONDS": "3",
         "OVERSEER_LEASE_RETRY_PERIOD_SECONDS": "0.5"}


def lease(kubectl: Any, ns: str) -> dict[str, Any]:
    out = kubectl("get", "lease", "overseer-operator", "-n", ns, "-o", "json", check=False)
    return (json.loads(out.stdout).get("spec") or {}) if out.returncode == 0 else {}


def identity(op: Any) -> str | None:
    """The identity under which this replica holds the Lease, from its log."""
    found = re.search(r"holding Lease \S+ as (\S+): reconciling", op.log_text())
    return found.group(1) if found else None


def metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A replica's /metrics: family name -> [(labels, value)]."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(body)}


def test_one_replica_reconciles_and_another_takes_over(kubectl: Any, crds: Any, namespace: str, operator: Any,
                                                       exit_pod: Any) -> None:
    replica = ("--leader-elect", "--leader-elect-namespace", namespace)
    first_port, second_port = free_port(), free_port()
    first = operator.start(namespace, *replica, "--metrics-port", str(first_port), env=LEASE)
    leader = wait_for(lambda: identity(first), description="the first replica holds the Lease")
    second = operator.start(namespace, *replica, "--metrics-port", str(second_port), env=LEASE)
    # Both are ready once their caches are filled (a rolling update waits for new replicas to be
    # ready); the standby says whom it waits for, and reconciles nothing.
    wait_for(lambda: first.probe("/readyz") == (200, "ok"), description="the leader's /readyz")
    standby = (200, f"standby: caches filled, waiting for Lease {namespace}/overseer-operator (held by {leader})")
    wait_for(lambda: second.probe("/readyz") == standby, description="the standby's /readyz")
    assert second.probe("/healthz") == (200, "ok")
    world = World(namespace, kubectl, first, exit_pod)
    world.secret()
    world.agent("coder", max=5)
    world.goal("one")
    world.wait_phase("one", "Running")
    assert lease(kubectl, namespace)["holderIdentity"] == leader
    assert identity(second) is None and "waiting to hold Lease" in second.log_text()
    # Only the leader reports what it reads from its caches: summed, the standby's full caches
    # would count every goal twice.
    led, waiting = metrics(first_port), metrics(second_port)
    assert led["overseer_leader"] == [({}, 1.0)] and waiting["overseer_leader"] == [({}, 0.0)]
    assert ({"namespace": namespace, "agent": "coder", "phase": "Running"}, 1.0) in led["overseer_goals"]
    assert not waiting.get("overseer_goals") and not waiting.get("overseer_approvals_pending")

    # Killed without a word: the second replica waits out the Lease, then reconciles.
    first.kill()
    world.goal("two")
    world.wait_phase("two", "Running")
    successor = identity(second)
    assert successor and successor != leader
    wait_for(lambda: second.probe("/readyz") == (200, "ok"), description="the new leader's /readyz")
    spec = lease(kubectl, namespace)
    assert spec["holderIdentity"] == successor and spec["leaseTransitions"] >= 1
    assert len(world.goal_pods("one")) == 1, "the new leader adopted the running goal, no second pod"
    took_over = metrics(second_port)
    assert took_over["overseer_leader"] == [({}, 1.0)]
    assert ({"namespace": namespace, "agent": "coder", "phase": "Running"}, 2.0) in took_over["overseer_goals"]

    # Shut down cleanly, a leader hands the Lease back; a waiting replica takes it.
    third = operator.start(namespace, *replica, env=LEASE)
    assert second.stop() == 0
    assert lease(kubectl, namespace).get("holderIdentity") in (None, "", identity(third))
    wait_for(lambda: identity(third), description="the third replica holds the Lease")
    world.goal("three")
    world.wait_phase("three", "Running")


def test_a_leader_that_loses_its_lease_stops_and_exits_non_zero(kubectl: Any, crds: Any, namespace: str,
                                                                operator: Any) -> None:
    op = operator.start(namespace, "--leader-elect", "--leader-elect-namespace", namespace, env=LEASE)
    wait_for(lambda: identity(op), description="the replica holds the Lease")
    # Another party takes the Lease for an hour (as a replica with a stuck clock might).
    kubectl("patch", "lease", "overseer-operator", "-n", namespace, "--type=merge", "-p",
            '{"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}}')
    wait_for(lambda: not op.running, timeout=20, description="the replica exits after losing its Lease")
    assert op.proc.returncode == 1
    assert "no longer the leader" in op.log_text()
    assert lease(kubectl, namespace)["holderIdentity"] == "intruder"
