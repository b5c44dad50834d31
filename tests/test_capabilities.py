"""Capability validation: its input schema and the graph of what it requires."""

from __future__ import annotations

import pytest

from overseer.operator.capabilities import validate


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
    # That capability reports its own cycle; this one has nothing wrong with it.
    cap = make_capability("deploy", requires=["build"])

    ready, reason, _ = validate(cap, *catalogue(deploy=["build"], build=["test"], test=["build"]))

    assert (ready, reason) == (True, "Valid")


def test_the_capabilitys_own_requires_are_what_count(make_capability):
    # The spec being validated may be newer than what the lookup still returns for it.
    cap = make_capability("deploy", requires=["build"])

    ready, reason, _ = validate(cap, *catalogue(deploy=[], build=["deploy"]))

    assert (ready, reason) == (False, "RequirementCycle")
