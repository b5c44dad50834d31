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


def dry_run_create(k8s: Any, namespace: str, obj: dict[str, Any], tries: int = 5,
                   store: bool = False, timed_out: bool = False) -> tuple[bool, dict[str, Any]]:
    """(accepted, the API server's answer) for a create that stores nothing (or, with store, does)."""
    import time

    from kubernetes.client.rest import ApiException

    try:
        if obj["apiVersion"].startswith("overseer.dev/"):
            answer = k8s.custom.create_namespaced_custom_object(
                "overseer.dev", "v1alpha1", namespace, PLURALS[obj["kind"]], obj,
                **({} if store else {"dry_run": "All"}))
        else:
            kinds = {"Pod": k8s.core.create_namespaced_pod, "ResourceQuota": k8s.core.create_namespaced_resource_quota,
                     "NetworkPolicy": k8s.networking.create_namespaced_network_policy}
            answer = k8s.api_client.sanitize_for_serialization(
                kinds[obj["kind"]](namespace, obj, dry_run="All"))
        return True, answer
    except ApiException as e:
        if e.status == 504 and tries > 1:  # a megabyte manifest on a busy 2-core machine
            time.sleep(2)
            return dry_run_create(k8s, namespace, obj, tries - 1, store, timed_out=True)
        if e.status == 409 and store and timed_out:  # the create that timed out was stored after all
            return True, k8s.custom.get_namespaced_custom_object(
                "overseer.dev", "v1alpha1", namespace, PLURALS[obj["kind"]], obj["metadata"]["name"])
        if e.status not in (400, 422):
            raise
        return False, json.loads(e.body) if e.body else {}


def assert_names_a_field(answer: dict[str, Any], what: str) -> None:
    causes = (answer.get("details") or {}).get("causes") or []
    named = [c for c in causes if (c.get("field") or "").startswith(("spec", "metadata"))
             or " spec." in c.get("message", "")]
    unnamed = [c for c in causes if c not in named and NOT_CHECKED not in c.get("message", "")]
    assert named and not unnamed, f"{what} rejected without naming a field: {answer.get('message')}"


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
            assert_names_a_field(answer, f"{how} {kind}")
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


# ---------------------------------------------------------------------------------------------
# With the operator running: the accepted manifests are created for real, a namespace per batch.

BATCHES = int(os.environ.get("OVERSEER_FUZZ_BATCHES", "2"))
LIVE_EXAMPLES = int(os.environ.get("OVERSEER_FUZZ_LIVE_EXAMPLES", "8"))  # per kind and batch
SETTLE_S = 90          # for every accepted object to carry a condition
QUIET_S = 10           # then a window in which nothing should be reconciled over and over
WRITES_PER_OBJECT = 12  # a goal's whole life is a handful of status writes; a hot loop is hundreds
CANARY_S = 45          # a canary goal finishes in a few seconds on an idle operator
# The operator's retries fast; the Secret recheck stays at its default so that a missing Secret
# is not itself polled every second in the quiet window.
LIVE_ENV = {"OVERSEER_RETRY_BACKOFF_SECONDS": "1", "OVERSEER_RESYNC_SECONDS": "600"}

CANARY = """
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {name: canary}
spec:
  role: "Canary"
  model: {name: claude-sonnet-5-5, maxTokens: 1024, apiKeySecretRef: {name: anthropic, key: api-key}}
  maxConcurrentGoals: 4
"""


def canary_goal(name: str) -> str:
    return f"""
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {{name: {name}}}
spec: {{description: "Say hello.", agentRef: {{name: canary}}}}
"""


def reconciles(port: int) -> dict[str, float]:
    """overseer_reconcile_total by kind and result, e.g. {"goal/ok": 12.0}."""
    from prometheus_client.parser import text_string_to_metric_families

    from e2e.harness import http_get

    status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert status == 200, body
    return {f"{s.labels['kind']}/{s.labels['result']}": s.value
            for family in text_string_to_metric_families(body) if family.name == "overseer_reconcile"
            for s in family.samples if s.name == "overseer_reconcile_total"}


class Writes:
    """Every write to the overseer objects of some namespaces, counted per object (a watch each kind)."""

    def __init__(self, k8s: Any, prefix: str):
        import threading

        self.k8s, self.prefix = k8s, prefix
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._watch, args=(plural,), daemon=True) for plural in PLURALS.values()]
        for t in self.threads:
            t.start()

    def _watch(self, plural: str) -> None:
        from kubernetes import watch

        def now() -> str:
            return self.k8s.custom.list_cluster_custom_object("overseer.dev", "v1alpha1", plural,
                                                              limit=1)["metadata"]["resourceVersion"]

        version = now()
        while not self.stopped.is_set():
            w = watch.Watch()
            for event in w.stream(self.k8s.custom.list_cluster_custom_object, "overseer.dev", "v1alpha1", plural,
                                  resource_version=version, timeout_seconds=5):
                if event["type"] == "ERROR":  # resourceVersion expired: go on from now
                    version = now()
                    break
                meta = event["object"]["metadata"]
                version = meta["resourceVersion"]
                if event["type"] == "MODIFIED" and meta["namespace"].startswith(self.prefix):
                    self.counts[(plural, meta["namespace"], meta["name"])] += 1
                if self.stopped.is_set():
                    break

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=10)


def settled(obj: dict[str, Any]) -> str | None:
    """None when the operator has said what it made of the object, else what is missing."""
    status = obj.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    if obj["kind"] in ("Agent", "Capability"):
        ready = conds.get("Ready")
        if ready is None:
            return "no Ready condition"
        if ready["status"] != "True" and not (ready.get("reason") and ready.get("message")):
            return f"Ready {ready['status']} without a reason and a message: {ready}"
        return None
    phase = status.get("phase")
    if phase is None:
        return "no phase"
    if phase in ("Pending", "Blocked", "Queued") and not any(
            c["status"] == "False" and c.get("reason") and c.get("message") for c in conds.values()):
        return f"{phase} with no condition saying why: {list(conds.values())}"
    return None


def healthy(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if obj["kind"] == "Goal":
        return status.get("phase") in ("Running", "Succeeded")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


@pytest.mark.timeout(max(600, BATCHES * (6 * LIVE_EXAMPLES + SETTLE_S + QUIET_S + 3 * CANARY_S)))
def test_fuzzed_objects_created_with_the_operator_running_are_reported_and_stall_nothing(
    cluster: Any, crds: list[str], admission_policies: list[str], k8s: Any, kubectl: Any, operator: Any
) -> None:
    """The accepted manifests stored for real in a namespace per batch, the operator watching:
    each ends with a condition saying what the operator made of it (and an Event when it is not
    healthy), the operator stays up with no hot loop, and a canary goal elsewhere keeps finishing."""
    import time

    from hypothesis import seed

    from e2e import harness

    base = harness.dns_name("fuzz-live", max_len=40)
    metrics_port = harness.free_port()
    op = operator.start(f"{base}-*", "--metrics-port", str(metrics_port), env=LIVE_ENV)
    counts: Counter[str] = Counter()
    problems: list[str] = []
    created: list[str] = []
    canary_s: list[float] = []

    def namespace(suffix: str) -> str:
        ns = harness.create_namespace(k8s, f"{base}-{suffix}")
        created.append(ns)
        kubectl("create", "secret", "generic", "anthropic", "-n", ns, "--from-literal=api-key=test-key")
        return ns

    def run_canary(ns: str, name: str) -> float:
        start = time.monotonic()
        kubectl("apply", "-n", ns, "-f", "-", input=canary_goal(name))
        pod = harness.wait_for(lambda: ((k8s.custom.get_namespaced_custom_object(
            "overseer.dev", "v1alpha1", ns, "goals", name).get("status") or {}).get("pod")),
            timeout=CANARY_S, description=f"canary goal {name} to get a pod")
        harness.exit_pod(k8s, ns, pod, 0, timeout=CANARY_S)
        harness.wait_for(lambda: (k8s.custom.get_namespaced_custom_object(
            "overseer.dev", "v1alpha1", ns, "goals", name).get("status") or {}).get("phase") == "Succeeded",
            timeout=CANARY_S, description=f"canary goal {name} to succeed")
        return time.monotonic() - start

    writes = Writes(k8s, base)
    try:
        canary_ns = namespace("canary")
        kubectl("apply", "-n", canary_ns, "-f", "-", input=CANARY)
        harness.wait_for(lambda: healthy(k8s.custom.get_namespaced_custom_object(
            "overseer.dev", "v1alpha1", canary_ns, "agents", "canary")), timeout=60, description="canary Agent Ready")
        idle = run_canary(canary_ns, "canary-idle")
        canary_s.append(idle)

        for batch in range(BATCHES):
            ns = namespace(f"b{batch}")
            accepted: list[tuple[str, str]] = []
            for kind in sorted(KINDS):
                @seed(batch)
                @settings(max_examples=LIVE_EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(specs(kind))
                def one(case: tuple[dict[str, Any], str]) -> None:
                    spec, how = case
                    name = f"fuzzed-{kind.lower()}-{counts['tried']}"
                    obj = {"apiVersion": "overseer.dev/v1alpha1", "kind": kind,
                           "metadata": {"name": name, "namespace": ns}, "spec": spec}
                    counts["tried"] += 1
                    ok, answer = dry_run_create(k8s, ns, obj, store=True)
                    if not ok:
                        counts["rejected"] += 1
                        assert_names_a_field(answer, f"{how} {kind}")
                        return
                    counts["accepted"] += 1
                    accepted.append((PLURALS[kind], name))

                one()
            took = run_canary(canary_ns, f"canary-{batch}")
            canary_s.append(took)
            assert took < CANARY_S, f"canary goal took {took:.0f} s beside batch {batch} (idle: {idle:.0f} s)"

            def get(plural: str, name: str) -> dict[str, Any]:
                return k8s.custom.get_namespaced_custom_object("overseer.dev", "v1alpha1", ns, plural, name)

            def unsettled() -> list[str]:
                return [f"{plural}/{name}: {why}" for plural, name in accepted
                        if (why := settled(get(plural, name))) is not None]
            try:
                harness.wait_for(lambda: not unsettled(), timeout=SETTLE_S,
                                 description=f"every accepted object of {ns} to carry a condition")
            except AssertionError:
                problems += [f"{ns} {line}" for line in unsettled()]

            before = reconciles(metrics_port)
            time.sleep(QUIET_S)
            after = reconciles(metrics_port)
            quiet = sum(after.values()) - sum(before.values())
            if quiet > 2 * (len(accepted) + 5):
                problems.append(f"{ns}: {quiet:.0f} reconciles in a quiet {QUIET_S} s for {len(accepted)} objects "
                                f"(hot loop): {after}")

            events = k8s.core.list_namespaced_event(ns).items
            by_object: dict[str, list[Any]] = {}
            for e in events:
                by_object.setdefault(e.involved_object.name, []).append(e)
            for plural, name in accepted:
                obj = get(plural, name)
                mine = by_object.get(name, [])
                failed = [e for e in mine if e.reason == "ReconcileFailed"]
                if failed:
                    problems.append(f"{ns} {plural}/{name} {json.dumps(obj['spec'])[:400]}: {failed[0].message}")
                if not healthy(obj):
                    if mine:
                        counts["reported"] += 1
                    else:
                        problems.append(f"{ns} {plural}/{name}: not healthy and no Event: "
                                        f"{json.dumps(obj.get('status'))[:400]}")
            assert op.running and op.starts == 1, f"the operator died during batch {batch}"
    finally:
        writes.stop()
        for ns in created:
            harness.delete_namespace(k8s, ns)
        print(f"\nbad input stored with the operator running: tried {counts['tried']}, rejected {counts['rejected']}, "
              f"accepted {counts['accepted']}, reported {counts['reported']}, crashed {len(problems)}; "
              f"canary goal {', '.join(f'{t:.1f}' for t in canary_s)} s (idle first); "
              f"most writes to one object {max(writes.counts.values(), default=0)}; reconciles "
              f"{reconciles(metrics_port) if op.running else 'operator down'}")
    hot = [f"{key}: {n} writes" for key, n in writes.counts.items() if n > WRITES_PER_OBJECT and key[1] != canary_ns]
    assert not problems + hot, "\n".join((problems + hot)[:20])
