"""What GitOps tools make of Overseer's objects on a real API server: Argo CD's health (the Lua
checks of manifests/argocd run in gopher-lua, the VM Argo CD embeds) and kstatus (cli-utils'
status.Compute, as Flux reads it), for objects taken live in every phase."""

from __future__ import annotations

import json
from typing import Any

from e2e import health
from e2e.harness import wait_for
from e2e.world import World


def look(world: World) -> dict[tuple[str, str], dict[str, Any]]:
    """Argo CD's and kstatus' verdicts on every Goal, Agent and Capability of the namespace."""
    listing = world.kubectl("get", "goals,agents,capabilities", "-n", world.ns, "-o", "json").stdout
    return health.verdicts(listing)


def argocd(verdicts: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> tuple[str, str]:
    v = verdicts[(kind, name)]["argocd"]
    return v["status"], v["message"]


def kstatus(verdicts: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> str:
    return verdicts[(kind, name)]["kstatus"]["status"]


def test_argocd_health_checks_pass_their_recorded_cases() -> None:
    proc = health.run("test", str(health.ARGOCD_CM), str(health.ARGOCD_DIR))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in ("Goal", "Agent", "Capability"):
        assert f"overseer.dev_{kind}/testdata/" in proc.stdout


def test_argocd_and_kstatus_read_live_goals_agents_and_capabilities(world: World) -> None:
    world.capability("pytest")
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: bad-schema}
spec: {description: d, command: {run: [x]}, inputSchema: {type: 12}}
""")
    world.agent("coder", max=1, capabilities="[pytest]")
    world.agent("keyless", secret="no-such-secret")
    # Generous: the first reconciles of a fresh namespace wait on a shared, often loaded machine.
    world.wait_condition("agent", "coder", "Ready", "True", timeout=60)
    world.wait_condition("agent", "keyless", "Ready", "False", "SecretNotFound", timeout=60)
    world.wait_condition("capability", "bad-schema", "Ready", "False", "InvalidInputSchema", timeout=60)
    world.goal("early", agent="later")
    world.goal("build")
    world.running_pod("build")
    world.goal("deploy", depends="[build]")
    world.goal("next", priority=10)
    world.goal("stop-me")
    for name, phase in (("early", "Pending"), ("deploy", "Blocked"), ("next", "Queued"), ("stop-me", "Queued")):
        world.wait_phase(name, phase)
    world.kubectl("patch", "goal", "stop-me", "-n", world.ns, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    world.wait_phase("stop-me", "Cancelled")

    # kubectl get: MESSAGE says what a goal waits for or why it ended, and nothing while it runs.
    rows = {line.split()[0]: line for line in world.kubectl("get", "goals", "-n", world.ns).stdout.splitlines()}
    assert rows["NAME"].split() == ["NAME", "PHASE", "AGENT", "PROGRESS", "TOKENS", "COST", "MESSAGE", "AGE"]
    assert "waiting for build" in rows["deploy"] and "waiting for a free slot" in rows["next"]
    assert "spec.cancel is true" in rows["stop-me"]
    assert "attempt" not in rows["build"] and world.get("goal", "build")["status"]["message"].startswith("attempt 1")

    seen = look(world)
    for name in ("early", "build", "deploy", "next"):
        status, message = argocd(seen, "Goal", name)
        assert status == "Progressing", (name, status, message)
        assert message == world.get("goal", name)["status"]["message"]
    assert "spec.agentRef.name" in argocd(seen, "Goal", "early")[1]
    assert argocd(seen, "Goal", "stop-me") == ("Degraded", "Cancelled: spec.cancel is true; the goal was stopped")
    assert argocd(seen, "Agent", "coder")[0] == "Healthy"
    status, message = argocd(seen, "Agent", "keyless")
    assert status == "Degraded" and message.startswith("SecretNotFound: ") and "no-such-secret" in message
    assert argocd(seen, "Capability", "pytest")[0] == "Healthy"
    status, message = argocd(seen, "Capability", "bad-schema")
    assert status == "Degraded" and message.startswith("InvalidInputSchema: spec.inputSchema")
    # kstatus: work under way is InProgress, a goal that ended without success Failed, an Agent
    # waiting for its Secret InProgress, a Capability only a spec change can fix Failed.
    for kind, name, expected in (("Goal", "early", "InProgress"), ("Goal", "build", "InProgress"),
                                 ("Goal", "deploy", "InProgress"), ("Goal", "next", "InProgress"),
                                 ("Goal", "stop-me", "Failed"), ("Agent", "coder", "Current"),
                                 ("Agent", "keyless", "InProgress"), ("Capability", "pytest", "Current"),
                                 ("Capability", "bad-schema", "Failed")):
        assert kstatus(seen, kind, name) == expected, (kind, name, seen[(kind, name)])

    # The freed slot goes to the higher priority; its failure (no retries) degrades it.
    world.finish("build", 0)
    world.wait_phase("build", "Succeeded")
    world.finish("next", 3)
    world.wait_phase("next", "Failed")
    world.wait_phase("deploy", "Running")
    seen = look(world)
    assert argocd(seen, "Goal", "build") == ("Healthy", "attempt 1 succeeded")
    status, message = argocd(seen, "Goal", "next")
    assert status == "Degraded" and message.startswith("Failed: ") and "exited with code 3" in message
    assert argocd(seen, "Goal", "deploy")[0] == "Progressing"
    assert [kstatus(seen, "Goal", n) for n in ("build", "next", "deploy")] == ["Current", "Failed", "InProgress"]
    assert "exited with code 3" in seen[("Goal", "next")]["kstatus"]["message"]

    # An edit to a finished goal runs nothing again, and both tools still see it finished.
    world.kubectl("patch", "goal", "build", "-n", world.ns, "--type=merge", "-p", '{"spec":{"priority":5}}')
    wait_for(lambda: (g := world.get("goal", "build"))["status"]["observedGeneration"] == g["metadata"]["generation"],
             description="the finished goal's edit observed")
    seen = look(world)
    assert (argocd(seen, "Goal", "build")[0], kstatus(seen, "Goal", "build")) == ("Healthy", "Current")
    assert world.phase("build") == "Succeeded" and len(world.goal_pods("build")) == 1


def test_a_goal_awaiting_approval_is_suspended_with_the_command_to_approve(world: World, agents: Any,
                                                                           kubectl: Any) -> None:
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: deploy}
spec: {description: "Deploy to production", risk: high, command: {run: ["cat"]},
       inputSchema: {type: object, properties: {target: {type: string}}, required: [target]}}
""")
    agents({"ship": [{"reply": [{"tool_use": {"name": "deploy", "input": {"target": "prod"}}}]},
                     {"reply": [{"text": "Deployed."}]}]}, capabilities="[deploy]")
    world.goal("ship")
    waiting = world.wait_phase("ship", "AwaitingApproval", timeout=60)
    approval = waiting["status"]["pendingApprovals"][0]["id"]
    status, message = argocd(look(world), "Goal", "ship")
    assert status == "Suspended"
    assert f"kubectl annotate goal/ship overseer.dev/approve={approval}" in message
    assert kstatus(look(world), "Goal", "ship") == "InProgress"

    kubectl("annotate", "goal", "ship", "-n", world.ns, f"overseer.dev/approve={approval}")
    world.wait_phase("ship", "Succeeded", timeout=60)
    seen = look(world)
    assert (argocd(seen, "Goal", "ship")[0], kstatus(seen, "Goal", "ship")) == ("Healthy", "Current")
    # No TODO list: PROGRESS shows the iteration.
    row = world.kubectl("get", "goal", "ship", "-n", world.ns, "--no-headers").stdout.split()
    assert row[:5] == ["ship", "Succeeded", "coder", "iteration", "2"], row


ARGOCD_MANAGER = "argocd-controller"  # the field manager of Argo CD's server-side apply

SYNCED_GOAL = """
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata:
  name: synced
  labels: {{team: a, app.kubernetes.io/part-of: team-a-work}}
  annotations:
    argocd.argoproj.io/tracking-id: "team-a-goals:overseer.dev/Goal:{ns}/synced"
    argocd.argoproj.io/sync-wave: "1"
spec:
  description: "Make tests/test_parser.py pass without changing the tests."
  agentRef: {{name: coder}}
  dependsOn: [first]
  timeout: 10m
  maxRetries: 1
"""


def test_a_goal_synced_with_server_side_apply_never_drifts(world: World) -> None:
    world.agent("coder")
    world.goal("first")
    manifest = SYNCED_GOAL.format(ns=world.ns)

    def sync(*extra: str) -> dict[str, Any]:
        out = world.kubectl("apply", "--server-side", f"--field-manager={ARGOCD_MANAGER}", "-n", world.ns,
                            "-o", "json", *extra, "-f", "-", input=manifest).stdout
        return json.loads(out)

    applied = sync()
    world.wait_phase("synced", "Blocked")
    world.finish("first", 0)
    first_pod = world.running_pod("synced")
    world.exit_pod(world.ns, first_pod, 3)  # a failed attempt and its retry: more status writes
    wait_for(lambda: (g := world.get("goal", "synced"))["status"].get("attempt") == 2
             and g["status"]["phase"] == "Running", description="attempt 2 running")
    world.finish("synced", 0)
    done = world.wait_phase("synced", "Succeeded")

    assert done["spec"] == applied["spec"]
    assert done["metadata"]["labels"] == applied["metadata"]["labels"]
    assert done["metadata"]["annotations"] == applied["metadata"]["annotations"]
    assert done["metadata"]["generation"] == applied["metadata"]["generation"] == 1
    # Every field outside status belongs to Argo CD alone: nothing for its diff or self-heal to undo.
    fields = json.loads(world.kubectl("get", "goal", "synced", "-n", world.ns, "-o", "json",
                                      "--show-managed-fields").stdout)["metadata"]["managedFields"]
    others = [(m["manager"], m["operation"], m.get("subresource")) for m in fields if m["manager"] != ARGOCD_MANAGER]
    assert others and all(sub == "status" for _, _, sub in others), others
    # Argo CD's next sync (a dry run, as its server-side diff does, then the apply) changes nothing.
    assert sync("--dry-run=server")["metadata"]["resourceVersion"] == world.get("goal", "synced")["metadata"]["resourceVersion"]
    again = sync()
    assert again["metadata"]["generation"] == 1 and again["status"]["phase"] == "Succeeded"
