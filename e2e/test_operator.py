"""The operator on a real API server: what a user sees with kubectl after applying manifests."""

from __future__ import annotations

import json
from typing import Any

from e2e.harness import wait_for
from e2e.world import GOAL, World

# ---- Agents -------------------------------------------------------------------------------

CHILDREN = ("serviceaccount", "role", "rolebinding", "networkpolicy", "resourcequota")


def test_agent_gets_least_privilege_children_that_follow_its_spec(world: World) -> None:
    world.capability("pytest", cidr="10.1.0.0/16")
    world.agent("coder", capabilities="[pytest]", quota='{pods: "4", requests.cpu: "2"}')
    world.wait_condition("agent", "coder", "Ready", "True")
    for kind in CHILDREN:
        obj = wait_for(lambda: world.get(kind, "overseer-agent-coder"), description=f"{kind} of agent coder")
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Agent", "coder", True)
    assert world.get("resourcequota", "overseer-agent-coder")["spec"]["hard"] == {"pods": "4", "requests.cpu": "2"}
    policy = world.get("networkpolicy", "overseer-agent-coder")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {"ipBlock": {"cidr": "10.1.0.0/16"}} in [peer for rule in policy["egress"] for peer in rule["to"]]

    sa = "system:serviceaccount:%s:overseer-agent-coder" % world.ns
    def can(verb: str, resource: str, *extra: str) -> str:
        return world.kubectl("auth", "can-i", verb, resource, *extra, "-n", world.ns, "--as", sa,
                             check=False).stdout.strip()
    assert can("patch", "goals.overseer.dev", "--subresource=status") == "yes"
    assert can("create", "goals.overseer.dev") == "yes"
    assert can("patch", "goals.overseer.dev") == "no", "an agent must not annotate (approve) its own goal"
    assert can("get", "secrets") == "no"
    assert can("create", "pods") == "no"

    # Spec edits flow to the children; dropping the quota removes the ResourceQuota.
    world.capability("pytest", cidr="10.2.0.0/16")
    world.agent("coder", capabilities="[pytest]", quota='{pods: "6"}')
    wait_for(lambda: world.get("resourcequota", "overseer-agent-coder")["spec"]["hard"] == {"pods": "6"},
             description="ResourceQuota following spec.quota")
    wait_for(lambda: {"ipBlock": {"cidr": "10.2.0.0/16"}} in [
        p for r in world.get("networkpolicy", "overseer-agent-coder")["spec"]["egress"] for p in r["to"]],
        description="NetworkPolicy following the capability's egress")
    world.agent("coder", capabilities="[pytest]")
    wait_for(lambda: world.get("resourcequota", "overseer-agent-coder") is None, description="quota removed")

    # Deleting the Agent deletes what it owns.
    world.kubectl("delete", "agent", "coder", "-n", world.ns)
    for kind in CHILDREN[:4]:
        wait_for(lambda: world.get(kind, "overseer-agent-coder") is None, timeout=60,
                 description=f"{kind} garbage-collected with its Agent")


def api_server_peers(world: World) -> dict[str, list[int]]:
    """The ipBlocks of the agent's NetworkPolicy with the ports of their rule."""
    policy = world.get("networkpolicy", "overseer-agent-coder") or {"spec": {"egress": []}}
    return {p["ipBlock"]["cidr"]: [port["port"] for port in rule.get("ports", [])]
            for rule in policy["spec"]["egress"] for p in rule["to"] if "ipBlock" in p}


def test_agent_network_policy_follows_where_the_api_server_publishes_itself(world: World, cluster: Any) -> None:
    # The API server publishes itself in EndpointSlice default/kubernetes, as on any cluster.
    [published] = json.loads(world.kubectl("get", "endpointslices", "-n", "default", "-l",
                                           "kubernetes.io/service-name=kubernetes", "-o", "json").stdout)["items"]
    # (Its advertised address: Endpoints may not name the loopback address it listens on.)
    api_port = int(cluster.api_url.rsplit(":", 1)[1])
    [address] = published["endpoints"][0]["addresses"]
    assert [p["port"] for p in published["ports"]] == [api_port]

    world.agent("coder")
    world.wait_condition("agent", "coder", "Ready", "True")
    wait_for(lambda: api_server_peers(world).get(f"{address}/32") == [api_port],
             description="the NetworkPolicy allowing the API server's published address and port")
    allowed = world.wait_condition("agent", "coder", "APIServerEgress", "True", "Allowed")
    assert f"{address}/32 port {api_port}" in allowed["message"]

    # A second API server endpoint appears: every Agent's NetworkPolicy follows, and again
    # when it goes.
    world.kubectl("apply", "-f", "-", input=EXTRA_SLICE.replace("API_PORT", str(api_port)))
    try:
        wait_for(lambda: api_server_peers(world).get("10.20.30.40/32") == [api_port],
                 description="the new API server endpoint in the NetworkPolicy")
    finally:
        world.kubectl("delete", "endpointslice", "e2e-extra-api-server", "-n", "default", "--ignore-not-found")
    wait_for(lambda: "10.20.30.40/32" not in api_server_peers(world) and f"{address}/32" in api_server_peers(world),
             description="the NetworkPolicy without the removed endpoint")


EXTRA_SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: e2e-extra-api-server
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: e2e}
addressType: IPv4
endpoints: [{addresses: [10.20.30.40], conditions: {ready: true}}]
ports: [{name: https, port: API_PORT, protocol: TCP}]
"""


def test_agent_says_what_is_missing_until_it_exists(world: World) -> None:
    world.agent("coder", capabilities="[git]", secret="no-such-secret")
    caps = world.wait_condition("agent", "coder", "CapabilitiesReady", "False", "CapabilityNotFound")
    assert "spec.capabilities" in caps["message"] and "git" in caps["message"]
    ready = world.wait_condition("agent", "coder", "Ready", "False")
    assert ready["reason"] in ("CapabilityNotFound", "SecretNotFound")

    world.capability("git")
    world.wait_condition("agent", "coder", "CapabilitiesReady", "True")
    ready = world.wait_condition("agent", "coder", "Ready", "False", "SecretNotFound")
    assert "spec.model.apiKeySecretRef.name" in ready["message"] and "no-such-secret" in ready["message"]
    world.secret("no-such-secret")
    world.wait_condition("agent", "coder", "Ready", "True")
    reasons = {e["reason"] for e in world.events("coder")}
    assert {"SecretNotFound", "Ready"} <= reasons


def test_capability_is_validated(world: World) -> None:
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: bad-schema}
spec: {description: d, command: {run: [x]}, inputSchema: {type: 12}}
""")
    c = world.wait_condition("capability", "bad-schema", "Ready", "False", "InvalidInputSchema")
    assert "spec.inputSchema" in c["message"]
    world.capability("lint", requires="[fmt]")
    c = world.wait_condition("capability", "lint", "Ready", "False", "MissingRequirement")
    assert "fmt" in c["message"]
    world.capability("fmt", requires="[lint]")
    world.wait_condition("capability", "lint", "Ready", "False", "RequirementCycle")
    world.wait_condition("capability", "fmt", "Ready", "False", "RequirementCycle")
    world.capability("fmt")
    world.wait_condition("capability", "lint", "Ready", "True")


# ---- Goals --------------------------------------------------------------------------------

def test_goal_gets_exactly_one_pod_and_follows_it(world: World) -> None:
    world.agent("coder")
    world.goal("fix-ci")
    goal = world.wait_phase("fix-ci", "Running")
    assert goal["status"]["agent"] == "coder" and goal["status"]["attempt"] == 1
    pods = world.goal_pods("fix-ci")
    assert [p["metadata"]["name"] for p in pods] == [goal["status"]["pod"]]
    pod = pods[0]
    assert pod["metadata"]["labels"]["overseer.dev/agent"] == "coder"
    assert pod["metadata"]["ownerReferences"][0]["name"] == "fix-ci"
    assert pod["spec"]["serviceAccountName"] == "overseer-agent-coder"

    world.exit_pod(world.ns, pod["metadata"]["name"], 0)
    done = world.wait_phase("fix-ci", "Succeeded")
    assert done["status"]["completedAt"] and done["status"]["lastExitCode"] == 0
    assert len(world.goal_pods("fix-ci")) == 1
    table = world.kubectl("get", "goals", "-n", world.ns).stdout
    assert "Succeeded" in table and "coder" in table
    assert {"Dispatched", "Succeeded"} <= {e["reason"] for e in world.events("fix-ci")}

    world.kubectl("delete", "goal", "fix-ci", "-n", world.ns)
    wait_for(lambda: not world.goal_pods("fix-ci"), timeout=60, description="pod deleted with its Goal")


def test_goal_waits_for_its_dependencies(world: World) -> None:
    world.agent("coder", max=5)
    world.goal("deploy", depends="[build, test]")
    blocked = world.wait_phase("deploy", "Blocked")
    assert blocked["status"]["waitingFor"] == ["build", "test"]
    assert world.goal_pods("deploy") == []

    world.goal("build")
    world.goal("test", depends="[build]")
    world.finish("build", 0)
    world.wait_phase("build", "Succeeded")
    wait_for(lambda: world.get("goal", "deploy")["status"]["waitingFor"] == ["test"],
             description="deploy now waits only for test")
    world.finish("test", 0)
    world.wait_phase("deploy", "Running")


def test_dependency_cycle_fails_with_a_reason(world: World) -> None:
    world.agent("coder")
    world.goal("a", depends="[b]")
    world.goal("b", depends="[c]")
    world.goal("c", depends="[a]")
    for name in "abc":
        failed = world.wait_phase(name, "Failed")
        assert "cycle" in failed["status"]["message"]
        assert world.condition("goal", name, "Complete")["reason"] == "DependencyCycle"
    assert world.items("pods") == []


def test_failed_dependency_fails_its_dependents(world: World) -> None:
    world.agent("coder")
    world.goal("build")
    world.goal("deploy", depends="[build]")
    world.finish("build", 2)
    world.wait_phase("build", "Failed")
    failed = world.wait_phase("deploy", "Failed")
    assert world.condition("goal", "deploy", "Complete")["reason"] == "DependencyFailed"
    assert "build" in failed["status"]["message"]


def test_max_concurrent_goals_queues_by_priority(world: World) -> None:
    world.agent("coder", max=1)
    world.goal("first", priority=0)
    world.wait_phase("first", "Running")
    world.goal("low", priority=1)
    world.goal("high", priority=10)
    world.goal("mid", priority=5)
    for name in ("low", "high", "mid"):
        world.wait_phase(name, "Queued")

    order = []
    for _ in range(4):
        running = wait_for(lambda: [g for g in ("first", "high", "mid", "low") if world.phase(g) == "Running"],
                           description="one goal running")
        assert len(running) == 1, f"maxConcurrentGoals 1 but running: {running}"
        order.append(running[0])
        world.finish(running[0], 0)
        world.wait_phase(running[0], "Succeeded")
    assert order == ["first", "high", "mid", "low"]
    agent = wait_for(lambda: (a := world.get("agent", "coder"))["status"].get("succeededGoals") == 4 and a,
                     description="agent counts 4 succeeded goals")
    assert agent["status"]["runningGoals"] == 0


def test_failed_pod_is_retried_then_the_goal_fails(world: World) -> None:
    world.agent("coder")
    world.goal("flaky", retries=1)
    first = world.running_pod("flaky")
    world.exit_pod(world.ns, first, 3)
    second = wait_for(lambda: (g := world.get("goal", "flaky"))["status"].get("attempt") == 2
                      and g["status"]["phase"] == "Running" and g["status"]["pod"], description="attempt 2 running")
    assert second != first
    world.exit_pod(world.ns, second, 3)
    failed = world.wait_phase("flaky", "Failed")
    assert failed["status"]["lastExitCode"] == 3
    assert world.condition("goal", "flaky", "Complete")["reason"] == "RetriesExhausted"
    assert len(world.goal_pods("flaky")) == 2
    assert "AttemptFailed" in {e["reason"] for e in world.events("flaky")}


def test_lost_pod_is_replaced(world: World) -> None:
    world.agent("coder")
    world.goal("resilient", retries=2)
    first = world.running_pod("resilient")
    world.kubectl("delete", "pod", first, "-n", world.ns, "--grace-period=0", "--force", check=False)
    g = wait_for(lambda: (g := world.get("goal", "resilient"))["status"].get("attempt") == 2
                 and g["status"]["phase"] == "Running" and g, timeout=30, description="attempt 2 after pod loss")
    assert g["status"]["pod"] != first


def test_timeout_fails_the_goal_and_stops_its_pod(world: World) -> None:
    world.agent("coder")
    world.goal("slow", extra="  timeout: 3s")
    pod = world.running_pod("slow")
    failed = world.wait_phase("slow", "Failed", timeout=20)
    assert world.condition("goal", "slow", "Complete")["reason"] == "Timeout"
    assert "spec.timeout" in failed["status"]["message"]
    wait_for(lambda: (p := world.get("pod", pod)) is None or p["metadata"].get("deletionTimestamp"),
             description="the timed-out pod is deleted")


def test_cancel_stops_the_goal(world: World) -> None:
    world.agent("coder")
    world.goal("stop-me")
    pod = world.running_pod("stop-me")
    world.kubectl("patch", "goal", "stop-me", "-n", world.ns, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    world.wait_phase("stop-me", "Cancelled")
    wait_for(lambda: (p := world.get("pod", pod)) is None or p["metadata"].get("deletionTimestamp"),
             description="the cancelled goal's pod is deleted")


def test_cancelling_a_goal_stops_its_sub_goals(world: World) -> None:
    world.agent("coder", max=3)
    world.goal("lead")
    world.running_pod("lead")
    world.goal("lead-part", extra="  parent: lead")
    part_pod = world.running_pod("lead-part")
    world.kubectl("patch", "goal", "lead", "-n", world.ns, "--type=merge", "-p", '{"spec":{"cancel":true}}')
    stopped = world.wait_phase("lead-part", "Cancelled")
    assert "parent goal lead is Cancelled" in stopped["status"]["message"]
    assert world.condition("goal", "lead-part", "Complete")["reason"] == "ParentEnded"
    wait_for(lambda: (p := world.get("pod", part_pod)) is None or p["metadata"].get("deletionTimestamp"),
             description="the sub-goal's pod is deleted")
    # A sub-goal created after its parent ended never starts.
    world.goal("lead-late", extra="  parent: lead")
    world.wait_phase("lead-late", "Cancelled")
    assert not world.goal_pods("lead-late")


def test_goal_waits_for_a_missing_agent_and_selects_by_labels(world: World) -> None:
    world.goal("early", agent="later")
    world.wait_phase("early", "Pending")
    c = world.wait_condition("goal", "early", "Dispatched", "False", "AgentNotFound")
    assert 'spec.agentRef.name' in c["message"] and "later" in c["message"]
    world.agent("later")
    world.wait_phase("early", "Running")

    world.agent("reviewer", labels="{team: review}")
    world.goal("review", selector="{team: review}")
    assert world.wait_phase("review", "Running")["status"]["agent"] == "reviewer"


def test_operator_killed_mid_dispatch_creates_no_duplicate_pod(world: World) -> None:
    world.agent("coder", max=30)
    world.wait_condition("agent", "coder", "Ready", "True")
    world.apply("\n---\n".join(GOAL.format(name=f"g{i}", agent="agentRef: {name: coder}", priority=0,
                                           depends="[]", retries=0, extra="", description="work")
                                for i in range(30)))
    for _ in range(3):
        # Kill as soon as dispatch is under way, somewhere between a pod create and its status write.
        wait_for(lambda: world.items("pods", "-l", "overseer.dev/agent=coder") or None, interval=0.05,
                 description="dispatch under way")
        world.op.kill()
        world.op.restart()
    def phases() -> dict[str, str]:
        return {g["metadata"]["name"]: f'{(g.get("status") or {}).get("phase")}: {(g.get("status") or {}).get("message")}'
                for g in world.items("goals") if (g.get("status") or {}).get("phase") != "Running"}
    last: dict[str, str] = {}

    def all_running() -> bool:
        last.clear()
        last.update(phases())
        return not last
    try:
        wait_for(all_running, timeout=90, description="all 30 goals running")
    except AssertionError as e:
        pods = sorted((p["metadata"]["name"], p["status"].get("phase"), bool(p["metadata"].get("deletionTimestamp")))
                      for p in world.items("pods"))
        raise AssertionError(f"{e}; not running: {last}; pods: {pods}") from None
    pods = world.items("pods", "-l", "overseer.dev/agent=coder")
    per_goal: dict[str, int] = {}
    for p in pods:
        per_goal[p["metadata"]["labels"]["overseer.dev/goal"]] = per_goal.get(p["metadata"]["labels"]["overseer.dev/goal"], 0) + 1
    assert per_goal == {f"g{i}": 1 for i in range(30)}
    assert all(world.get("goal", f"g{i}")["status"]["attempt"] == 1 for i in range(30))


def test_goal_waits_while_the_agents_quota_is_full(world: World) -> None:
    world.agent("coder", max=3, quota='{pods: "1"}')
    world.wait_condition("agent", "coder", "Ready", "True")
    wait_for(lambda: (world.get("resourcequota", "overseer-agent-coder") or {}).get("status", {}).get("hard"),
             description="quota observed by the resourcequota controller")
    world.goal("one")
    world.running_pod("one")
    world.goal("two")
    c = world.wait_condition("goal", "two", "Dispatched", "False", "QuotaExceeded")
    assert "exceeded quota" in c["message"]
    assert world.phase("two") == "Queued"
    world.finish("one", 0)
    world.wait_phase("two", "Running", timeout=30)
