"""The CRDs in crds/ on a real API server: accepted as structural, validating, explained, listed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from e2e.harness import Kubectl, wait_for
from tests.test_crds import SAMPLES  # the manifests a user would write, shared with the unit tests

CRD_NAMES = {"agents.overseer.dev", "goals.overseer.dev", "capabilities.overseer.dev"}



def sample(kind: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """The sample of `kind` moved into `namespace`, with `spec` fields replaced."""
    obj = copy.deepcopy(SAMPLES[kind])
    obj["metadata"]["namespace"] = namespace
    obj["spec"].update(spec)
    return obj


def apply(kubectl: Kubectl, namespace: str, *objs: dict[str, Any], check: bool = True):
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objs), check=check)


def test_crds_are_established_and_structural(crds: list[str], kubectl: Kubectl) -> None:
    assert CRD_NAMES <= set(crds)
    for name in sorted(CRD_NAMES):
        crd = json.loads(kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c for c in crd["status"]["conditions"]}
        assert conditions["Established"]["status"] == "True", conditions
        assert conditions["NamesAccepted"]["status"] == "True", conditions
        assert "NonStructuralSchema" not in conditions, conditions["NonStructuralSchema"]["message"]
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "overseer"
        assert crd["status"]["acceptedNames"]["categories"] == ["overseer"]


def test_valid_samples_are_accepted_and_defaulted(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    out = apply(kubectl, namespace, *(sample(k, namespace) for k in ("Agent", "Capability", "Goal")))
    assert "agent.overseer.dev/coder created" in out.stdout
    assert "capability.overseer.dev/pytest created" in out.stdout
    assert "goal.overseer.dev/fix-ci created" in out.stdout

    cap = json.loads(kubectl("get", "capability", "pytest", "-n", namespace, "-o", "json").stdout)
    assert cap["spec"]["command"]["timeout"] == "5m"  # defaulted by the API server
    assert cap["spec"]["inputSchema"] == {"type": "object", "properties": {"path": {"type": "string"}}}
    assert cap["spec"]["egress"][0]["protocol"] == "TCP"
    goal = json.loads(kubectl("get", "goal", "fix-ci", "-n", namespace, "-o", "json").stdout)
    assert goal["spec"]["maxRetries"] == 2 and goal["spec"]["cancel"] is False
    agent = json.loads(kubectl("get", "agent", "coder", "-n", namespace, "-o", "json").stdout)
    assert agent["spec"]["quota"] == {"pods": "4", "requests.cpu": "2", "requests.memory": "4Gi"}
    assert agent["spec"]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert agent["spec"]["codeExecution"] == "RequiresApproval"  # code waits for a person unless allowed


BAD = {
    "both-agent-ref-and-selector": (
        "Goal", {"agentSelector": {"matchLabels": {"team": "a"}}},
        ["exactly one of agentRef or agentSelector"],
    ),
    "neither-agent-ref-nor-selector": (
        "Goal", {"agentRef": None},
        ["exactly one of agentRef or agentSelector"],
    ),
    "command-and-http": (
        "Capability", {"http": {"url": "https://tools.example.invalid/run"}},
        ["exactly one of command, http or mcp"],
    ),
    "risk-extreme": ("Capability", {"risk": "extreme"}, ["spec.risk", '"low"', '"medium"', '"high"']),
    "timeout-soon": ("Goal", {"timeout": "soon"}, ["spec.timeout"]),
    "priority-high": ("Goal", {"priority": "high"}, ["spec.priority", "integer"]),
    "max-concurrent-goals-zero": ("Agent", {"maxConcurrentGoals": 0}, ["spec.maxConcurrentGoals"]),
    "code-execution-sometimes": ("Agent", {"codeExecution": "Sometimes"},
                                 ["spec.codeExecution", '"RequiresApproval"', '"Allowed"']),
    "depends-on-itself": ("Goal", {"dependsOn": ["fix-ci"]}, ["cannot depend on itself"]),
    "workspace-from-not-a-dependency": (
        "Goal", {"workspaceFrom": {"goal": "lint"}},
        ["spec.workspaceFrom.goal", "must also be listed in spec.dependsOn"],
    ),
    "egress-cidr-and-selector": (
        "Capability", {"egress": [{"cidr": "10.0.0.0/8", "podSelector": {"matchLabels": {"app": "db"}}}]},
        ["spec.egress[0]", "either cidr or namespaceSelector/podSelector"],
    ),
    # values that passed the schema and then wedged a reconcile or every goal pod
    "timeout-past-go-duration": ("Goal", {"timeout": "100000000h"}, ["spec.timeout", "at most 8760h"]),
    "timeout-past-a-year": ("Goal", {"timeout": "9000h"}, ["spec.timeout", "at most 8760h"]),
    "quota-lowercase-binary-suffix": ("Agent", {"quota": {"pods": "1ki"}}, ["spec.quota.pods", "should match"]),
    "quota-unknown-resource": ("Agent", {"quota": {"gpus": "1"}}, ["spec.quota", "ResourceQuota resources"]),
    "quota-zero-pods": ("Agent", {"quota": {"pods": "0"}}, ["spec.quota", "a quota of 0 stops every pod"]),
    "quota-zero-cpu": ("Agent", {"quota": {"requests.cpu": "0m"}}, ["spec.quota", "a quota of 0"]),
    "cidr-out-of-range": (
        "Capability", {"egress": [{"cidr": "999.1.1.1/99"}]}, ["spec.egress[0].cidr", "must be an IP range"],
    ),
    "cpu-milli-binary": (
        "Agent", {"resources": {"requests": {"cpu": "1mi"}}}, ["spec.resources.requests.cpu", "should match"],
    ),
    "resource-unknown": (
        "Agent", {"resources": {"limits": {"gpu": "1"}}}, ["spec.resources.limits", "nvidia.com/gpu"],
    ),
    "request-above-limit": (
        "Agent", {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        ["spec.resources", "a request must not be above its limit"],
    ),
    "image-with-spaces": ("Agent", {"image": "ghcr.io/org/agent 1.2"}, ["spec.image", "an image reference"]),
    "too-many-dependencies": (
        "Goal", {"dependsOn": [f"goal-{i}" for i in range(10_000)]}, ["spec.dependsOn", "at most 64 items"],
    ),
    "agent-in-another-namespace": (
        "Goal", {"agentRef": {"name": "coder", "namespace": "team-b"}}, ['unknown field "spec.agentRef.namespace"'],
    ),
    "capability-in-another-namespace": (
        "Agent", {"capabilities": ["team-b/pytest"]}, ["spec.capabilities[0]", "should match"],
    ),
    "requirement-in-another-namespace": (
        "Capability", {"requires": ["team-b/git"]}, ["spec.requires[0]", "should match"],
    ),
    "secret-name-not-an-object-name": (
        "Agent", {"model": {"name": "claude-sonnet-5-5", "apiKeySecretRef": {"name": "Anthropic Key", "key": "k"}}},
        ["spec.model.apiKeySecretRef.name"],
    ),
    "secret-key-with-slash": (
        "Agent", {"model": {"name": "claude-sonnet-5-5", "apiKeySecretRef": {"name": "anthropic", "key": "a/b"}}},
        ["spec.model.apiKeySecretRef.key"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_is_rejected_naming_the_field(
    case: str, crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    kind, spec, expected = BAD[case]
    obj = sample(kind, namespace, **spec)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    proc = apply(kubectl, namespace, obj, check=False)
    assert proc.returncode != 0, f"{case} was accepted:\n{proc.stdout}"
    for text in expected:
        assert text in proc.stderr, f"{case}: {text!r} not in\n{proc.stderr}"
    assert "created" not in proc.stdout


@pytest.mark.parametrize("name", ["bash", "read.file", "spawn-subgoal", "spawn.subgoal", "c" * 65])
def test_capability_name_that_cannot_be_a_tool_name_is_rejected(
    name: str, crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    """Every goal pod of an agent using such a Capability would fail: its tool name is the agent's own
    or longer than the Messages API takes."""
    cap = sample("Capability", namespace)
    cap["metadata"]["name"] = name
    proc = apply(kubectl, namespace, cap, check=False)
    if name == "spawn-subgoal":  # a dash stays a dash: spawn-subgoal is not spawn_subgoal
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0, f"{name} was accepted"
    expected = "at most 64 characters" if len(name) > 64 else "taken by one of the agent's own tools"
    assert expected in proc.stderr, proc.stderr


def test_a_megabyte_description_is_rejected_naming_the_field(
    crds: list[str], kubectl: Kubectl, namespace: str
) -> None:
    goal = sample("Goal", namespace, description="x" * 1_000_000)
    proc = kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(goal), check=False)
    assert proc.returncode != 0
    assert "spec.description: Too long: may not be more than 32768" in proc.stderr, proc.stderr[:2000]


def test_values_at_the_limits_are_accepted(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    objs = [
        sample("Goal", namespace, timeout="8760h", dependsOn=[f"g{i}" for i in range(64)]),
        sample("Agent", namespace, image="registry.local:5000/team/agent@sha256:" + "a" * 64,
               quota={"pods": 1, "count/deployments.apps": "2", "requests.nvidia.com/gpu": "1",
                      "hugepages-2Mi": "1Gi"},
               resources={"requests": {"cpu": "500m", "nvidia.com/gpu": 1}, "limits": {"cpu": "1", "memory": "1Gi"}}),
        sample("Capability", namespace, egress=[{"cidr": "fd00::/8"}, {"cidr": "10.1.2.3/32", "ports": [443]}],
               command={"run": ["true"], "timeout": "1h30m500ms"}),
    ]
    out = apply(kubectl, namespace, *objs)
    assert out.stdout.count(" created") == 3, out.stdout


def test_name_longer_than_a_label_value_is_rejected(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    goal = sample("Goal", namespace)
    goal["metadata"]["name"] = "g" * 64
    proc = apply(kubectl, namespace, goal, check=False)
    assert proc.returncode != 0
    assert "at most 63 characters" in proc.stderr, proc.stderr


def test_explain_shows_field_descriptions(crds: list[str], kubectl: Kubectl) -> None:
    def explained() -> str:
        out = kubectl("explain", "goal.spec.dependsOn", check=False)
        return out.returncode == 0 and " ".join(out.stdout.split())

    text = wait_for(explained, timeout=60, description="kubectl explain goal.spec.dependsOn")
    assert "Names of Goals in the same namespace that must succeed before this one starts." in text
    assert "a failed one or a cycle fails it" in text


def test_get_shows_printer_columns(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, *(sample(k, namespace) for k in ("Agent", "Capability", "Goal")))
    headers = {
        "goals": ["NAME", "PHASE", "AGENT", "PROGRESS", "TOKENS", "COST", "MESSAGE", "AGE"],
        "agents": ["NAME", "READY", "RUNNING", "SUCCEEDED", "FAILED", "COST", "AGE"],
        "capabilities": ["NAME", "RISK", "READY", "TOOLS", "CALLS", "FAILURES", "P50-MS", "AGE"],
    }
    for resource, expected in headers.items():
        out = kubectl("get", resource, "-n", namespace).stdout
        assert out.splitlines()[0].split() == expected, out
    wide = kubectl("get", "goals", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert "ATTEMPT" in wide
    caps = kubectl("get", "capabilities", "-n", namespace).stdout.splitlines()
    assert caps[1].split()[:2] == ["pytest", "low"]


def test_category_and_short_names(crds: list[str], kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, *(sample(k, namespace) for k in ("Agent", "Capability", "Goal")))

    def listed() -> set[str]:
        out = kubectl("get", "overseer", "-n", namespace, "-o", "name", check=False)
        return out.returncode == 0 and set(out.stdout.split())

    names = wait_for(listed, timeout=30, description="kubectl get overseer")
    assert names == {"agent.overseer.dev/coder", "capability.overseer.dev/pytest", "goal.overseer.dev/fix-ci"}
    for short, name in (("gl", "goal.overseer.dev/fix-ci"), ("agt", "agent.overseer.dev/coder"),
                        ("cap", "capability.overseer.dev/pytest")):
        assert kubectl("get", short, "-n", namespace, "-o", "name").stdout.split() == [name]
