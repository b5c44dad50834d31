"""Property-based bad input on the real API server: Agents, Goals and Capabilities generated from
the CRDs' own OpenAPI schemas (hypothesis-jsonschema), and mutations that break them.

Each manifest is created with a server-side dry run, which runs every check a real create does
(schema, CEL) and stores nothing. It is either
- rejected, every cause naming a field; or
- accepted, and then the operator must be able to live with it: the models read it, and what the
  operator renders from it (the goal pod, the agent's ResourceQuota and NetworkPolicy) is accepted
  by the API server in its turn; a capability the operator will not use is reported (Ready False).
A value the API server accepts but the operator cannot read or turn into children is what wedged
reconciles before: it counts as crashed, and crashed must stay 0.

`make fuzz` runs many more examples (OVERSEER_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis_jsonschema import from_schema

from overseer.api import Agent, Capability, Goal
from overseer.api.crd import render_crd, to_json_schema
from overseer.operator.agent_resources import child_name, render_network_policy, render_resource_quota
from overseer.operator.capabilities import validate
from overseer.operator.pods import render_pod
from overseer.operator.settings import Settings
from tests.test_crds import SAMPLES

EXAMPLES = int(os.environ.get("OVERSEER_FUZZ_EXAMPLES", "25"))
KINDS = {"Agent": Agent, "Goal": Goal, "Capability": Capability}
PLURALS = {"Agent": "agents", "Goal": "goals", "Capability": "capabilities"}

# Values that break a field: wrong types, sizes past every limit, empty and null.
BAD_VALUES = st.sampled_from([
    None, "", -1, 10**12, 1.5, True, [], {}, "x" * 1_000_000, ["a"] * 10_000,
    {"nested": {"deeper": ["x"]}}, "0", "1ki", "999.1.1.1/99", "100000000h", "with spaces", "../..",
])


def spec_schema(kind: str) -> dict[str, Any]:
    openapi = render_crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return to_json_schema(openapi["properties"]["spec"], strict=True)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a spec a value can be replaced."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


def replaced(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@st.composite
def specs(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], str]:
    """A spec from the schema (or the hand-written sample), mutated half of the time."""
    spec = draw(st.one_of(from_schema(spec_schema(kind)), st.just(copy.deepcopy(SAMPLES[kind]["spec"]))))
    if draw(st.booleans()):
        places = paths(spec) or [("description",)]
        where = draw(st.sampled_from(places))
        return replaced(spec, where, draw(BAD_VALUES)), "mutated"
    return spec, "generated"


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.crashes: list[str] = []

    def crashed(self, kind: str, spec: Any, why: str) -> None:
        self.counts["crashed"] += 1
        self.crashes.append(f"{kind} {json.dumps(spec, default=str)[:600]}: {why}")


@pytest.fixture(scope="module")
def tally() -> Any:
    t = Tally()
    yield t
    print(f"\nbad input on the real API server: tried {t.counts['tried']}, rejected {t.counts['rejected']}, "
          f"accepted {t.counts['accepted']}, reported {t.counts['reported']}, crashed {t.counts['crashed']}")


# The API server's note that CEL rules were skipped because of other errors, which it names.
NOT_CHECKED = "some validation rules were not checked"


def dry_run_create(k8s: Any, namespace: str, obj: dict[str, Any], tries: int = 3) -> tuple[bool, dict[str, Any]]:
    """(accepted, the API server's answer) for a create that stores nothing."""
    from kubernetes.client.rest import ApiException

    try:
        if obj["apiVersion"].startswith("overseer.dev/"):
            answer = k8s.custom.create_namespaced_custom_object(
                "overseer.dev", "v1alpha1", namespace, PLURALS[obj["kind"]], obj, dry_run="All")
        else:
            kinds = {"Pod": k8s.core.create_namespaced_pod, "ResourceQuota": k8s.core.create_namespaced_resource_quota,
                     "NetworkPolicy": k8s.networking.create_namespaced_network_policy}
            answer = k8s.api_client.sanitize_for_serialization(
                kinds[obj["kind"]](namespace, obj, dry_run="All"))
        return True, answer
    except ApiException as e:
        if e.status == 504 and tries > 1:  # a megabyte manifest on a busy 2-core machine
            return dry_run_create(k8s, namespace, obj, tries - 1)
        if e.status not in (400, 422):
            raise
        return False, json.loads(e.body) if e.body else {}


def check_children(k8s: Any, namespace: str, kind: str, obj: dict[str, Any], tally: Tally) -> None:
    """What the operator renders from an accepted object must be accepted too."""
    # a dry run assigns no uid; the operator only ever sees stored objects, which have one
    uid = "00000000-0000-0000-0000-000000000001"
    obj = {**obj, "metadata": {**obj["metadata"], "uid": uid}}
    model = KINDS[kind].model_validate(obj)
    agent = Agent.model_validate({**SAMPLES["Agent"], "metadata": {"name": "coder", "namespace": namespace, "uid": uid}})
    goal = Goal.model_validate({**SAMPLES["Goal"], "metadata": {"name": "fix-ci", "namespace": namespace, "uid": uid}})
    cfg = Settings()
    children: list[dict[str, Any] | None] = []
    if isinstance(model, Agent):
        children = [render_resource_quota(model), render_pod(goal, model, 1, cfg), render_network_policy(model, [], cfg)]
    elif isinstance(model, Goal):
        children = [render_pod(model, agent, 1, cfg)]
    elif isinstance(model, Capability):
        ready, reason, message = validate(model, exists=lambda n: True, requires_of=lambda n: [])
        if not ready:
            tally.counts["reported"] += 1
            assert "spec." in message, message
            return
        children = [render_network_policy(agent, [model], cfg)]
    for child in filter(None, children):
        ok, answer = dry_run_create(k8s, namespace, child)
        if not ok:
            tally.crashed(kind, obj["spec"], f"the API server refused its {child['kind']}: {answer.get('message')}")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_generated_and_broken_manifests_are_rejected_naming_a_field_or_handled(
    kind: str, crds: list[str], k8s: Any, namespace: str, tally: Tally
) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
              suppress_health_check=list(HealthCheck))
    @given(specs(kind))
    def one(case: tuple[dict[str, Any], str]) -> None:
        spec, how = case
        obj = {"apiVersion": "overseer.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "fuzzed", "namespace": namespace}, "spec": spec}
        tally.counts["tried"] += 1
        ok, answer = dry_run_create(k8s, namespace, obj)
        if not ok:
            tally.counts["rejected"] += 1
            causes = (answer.get("details") or {}).get("causes") or []
            named = [c for c in causes if (c.get("field") or "").startswith(("spec", "metadata"))
                     or " spec." in c.get("message", "")]
            unnamed = [c for c in causes if c not in named and NOT_CHECKED not in c.get("message", "")]
            assert named and not unnamed, f"{how} {kind} rejected without naming a field: {answer.get('message')}"
            return
        tally.counts["accepted"] += 1
        try:
            check_children(k8s, namespace, kind, answer, tally)
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - what would have wedged the operator's reconcile
            tally.crashed(kind, spec, f"{type(e).__name__}: {e}")

    # goal pods run as their Agent's ServiceAccount, which the operator would have created
    for agent in ("coder", "fuzzed"):
        k8s.core.create_namespaced_service_account(namespace, {"metadata": {"name": child_name(agent)}})
    before = len(tally.crashes)
    one()
    assert not tally.crashes[before:], "\n".join(tally.crashes[before:][:10])
