"""Capability validation: its input schema and the graph of what it requires."""

from __future__ import annotations

import pytest

from overseer.api.capability import with_requirements
from overseer.operator.agents import capabilities_condition
from overseer.operator.capabilities import call_stats, validate


def catalogue(**requires: list[str]):
    """exists and requires_of over the capabilities of one namespace."""
    return (lambda name: name in requires), (lambda name: requires.get(name, []))


def test_a_capability_with_a_valid_schema_and_no_requirements_is_ready(make_capability):
    cap = make_capability("pytest", input_schema={"type": "object", "properties": {"path": {"type": "string"}}})

    assert validate(cap, *catalogue(pytest=[])) == (True, "Valid", "input schema and requirements are valid")


def test_a_capability_whose_requirements_exist_is_ready(make_capability):
    cap = make_capability("deploy", requires=["git", "kubectl"])

    ready, reason, _ = validate(cap, *catalogue(deploy=["git", "kubectl"], git=[], kubectl=["git"]))

    assert (ready, reason) == (True, "Valid")


@pytest.mark.parametrize("schema", [
    {"type": "objekt"},
    {"type": "object", "properties": {"path": {"type": 7}}},
    {"type": "object", "required": "path"},
    {"type": "object", "properties": ["path"]},
])
def test_an_invalid_input_schema_is_named(make_capability, schema):
    cap = make_capability("pytest", input_schema=schema)

    ready, reason, message = validate(cap, *catalogue(pytest=[]))

    assert not ready
    assert reason == "InvalidInputSchema"
    assert "spec.inputSchema" in message


def test_missing_requirements_are_named(make_capability):
    cap = make_capability("deploy", namespace="team-a", requires=["git", "helm", "kubectl"])

    ready, reason, message = validate(cap, *catalogue(deploy=["git", "helm", "kubectl"], git=[]))

    assert not ready
    assert reason == "MissingRequirement"
    assert "spec.requires" in message
    assert "helm, kubectl" in message
    assert "git" not in message
    assert "team-a" in message


def test_a_capability_requiring_itself_is_a_cycle(make_capability):
    cap = make_capability("loop", requires=["loop"])

    ready, reason, message = validate(cap, *catalogue(loop=["loop"]))

    assert (ready, reason) == (False, "RequirementCycle")
    assert "loop -> loop" in message


def test_a_requirement_cycle_through_others_is_named(make_capability):
    cap = make_capability("deploy", requires=["build"])

    ready, reason, message = validate(cap, *catalogue(deploy=["build"], build=["test"], test=["deploy"]))

    assert (ready, reason) == (False, "RequirementCycle")
    assert "deploy -> build -> test -> deploy" in message


def test_requiring_a_capability_that_is_on_a_cycle_is_not_itself_a_cycle(make_capability):
    # That capability reports its own cycle; this one only waits for it.
    cap = make_capability("deploy", requires=["build"])

    ready, reason, message = validate(cap, *catalogue(deploy=["build"], build=["test"], test=["build"]),
                                      unready=lambda n: "RequirementCycle" if n in ("build", "test") else None)

    assert (ready, reason) == (False, "RequirementNotReady")
    assert "build (RequirementCycle)" in message


def test_the_capabilitys_own_requires_are_what_count(make_capability):
    # The spec being validated may be newer than what the lookup still returns for it.
    cap = make_capability("deploy", requires=["build"])

    ready, reason, _ = validate(cap, *catalogue(deploy=[], build=["deploy"]))

    assert (ready, reason) == (False, "RequirementCycle")


def test_a_capability_is_ready_only_when_what_it_requires_is_ready(make_capability):
    cap = make_capability("lint", requires=["fmt", "git"])

    ready, reason, message = validate(cap, *catalogue(lint=["fmt", "git"], fmt=[], git=[]),
                                      unready=lambda n: "InvalidInputSchema" if n == "fmt" else None)

    assert (ready, reason) == (False, "RequirementNotReady")
    assert "fmt (InvalidInputSchema)" in message and "git" not in message


def test_requirements_are_followed_through_a_chain_of_three():
    graph = {"lint": ["fmt"], "fmt": ["parser"], "parser": [], "git": ["parser"]}

    chains = with_requirements(["lint", "git"], graph.get)

    assert chains == {"lint": ["lint"], "git": ["git"], "fmt": ["lint", "fmt"], "parser": ["git", "parser"]}


def test_requirements_on_a_cycle_end_where_it_closes():
    chains = with_requirements(["a"], {"a": ["b"], "b": ["a"]}.get)

    assert chains == {"a": ["a"], "b": ["a", "b"]}


def raw_capability(name: str, ready: bool = True, reason: str = "Valid", message: str = "", requires=()):
    return {"metadata": {"name": name}, "spec": {"requires": list(requires)}, "status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message}]}}


def test_an_agent_names_the_missing_end_of_a_requires_chain(make_agent):
    agent = make_agent("coder", capabilities=["lint"])
    caps = {"lint": (["lint"], raw_capability("lint", False, "RequirementNotReady", requires=["fmt"])),
            "fmt": (["lint", "fmt"], raw_capability("fmt", False, "MissingRequirement", requires=["parser"])),
            "parser": (["lint", "fmt", "parser"], None)}

    ok, reason, message = capabilities_condition(agent, caps)

    assert (ok, reason) == (False, "CapabilityNotFound")
    assert "parser (needed by lint -> fmt -> parser) does not exist" in message


def test_an_agent_names_the_broken_link_not_those_waiting_for_it(make_agent):
    agent = make_agent("coder", capabilities=["lint"])
    caps = {"lint": (["lint"], raw_capability("lint", False, "RequirementNotReady", requires=["fmt"])),
            "fmt": (["lint", "fmt"], raw_capability("fmt", False, "RequirementNotReady", requires=["parser"])),
            "parser": (["lint", "fmt", "parser"], raw_capability("parser", False, "InvalidInputSchema",
                                                                 "spec.inputSchema is not a valid JSON Schema"))}

    ok, reason, message = capabilities_condition(agent, caps)

    assert (ok, reason) == (False, "CapabilityNotReady")
    assert message == ("capabilities not Ready: parser (needed by lint -> fmt -> parser): InvalidInputSchema "
                       "(spec.inputSchema is not a valid JSON Schema)")


def test_an_agent_counts_what_it_gets_through_requires(make_agent):
    agent = make_agent("coder", capabilities=["lint"])
    caps = {"lint": (["lint"], raw_capability("lint")), "fmt": (["lint", "fmt"], raw_capability("fmt"))}

    assert capabilities_condition(agent, caps) == (True, "AllReady", "2 capabilities ready (1 through requires)")


def goal_reporting(heartbeat: str, *entries: dict):
    return {"status": {"heartbeat": heartbeat, "capabilityCalls": list(entries)}}


def test_call_statistics_are_summed_over_the_goals_that_called_the_capability():
    goals = [goal_reporting("2026-12-01T10:00:00Z", {"name": "deploy", "calls": 3, "failures": 1,
                                                     "recentMs": [100, 200, 300]},
                            {"name": "lint", "calls": 9, "failures": 0, "recentMs": [5]}),
             goal_reporting("2026-12-01T11:00:00Z", {"name": "deploy", "calls": 2, "failures": 0,
                                                     "recentMs": [40, 50]}),
             {"status": {}}]

    assert call_stats("deploy", goals) == {"calls": 5, "failures": 1, "latencyP50Ms": 100}
    assert call_stats("pytest", goals) == {}


def test_the_p50_covers_only_the_most_recent_calls():
    old = goal_reporting("2026-12-01T09:00:00Z", {"name": "deploy", "calls": 100, "recentMs": [9000] * 20})
    new = [goal_reporting(f"2026-12-01T1{i}:00:00Z", {"name": "deploy", "calls": 20, "recentMs": [10] * 20})
           for i in range(5)]

    stats = call_stats("deploy", [old, *new])

    assert stats["calls"] == 200 and stats["latencyP50Ms"] == 10, "the 100 most recent calls were all fast"
