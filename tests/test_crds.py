"""The CustomResourceDefinitions in crds/ match the API models and are valid structural schemas."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from jsonschema import Draft4Validator
from pydantic import ValidationError

from overseer.api import KINDS, Agent, Capability, Goal, GoalStatus
from overseer.api.crd import main, render_all, render_crd, to_json_schema

REPO = Path(__file__).resolve().parent.parent
CRDS_DIR = REPO / "crds"

SAMPLES_YAML = """
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {name: coder, namespace: team-a}
spec:
  role: "Senior Python engineer"
  systemPrompt: "You fix failing tests with minimal diffs."
  model: {name: claude-sonnet-5-5, maxTokens: 8192, apiKeySecretRef: {name: anthropic, key: api-key}}
  capabilities: [git, pytest]
  maxConcurrentGoals: 2
  budget: {maxTokensPerGoal: 400000, maxIterationsPerGoal: 60, maxWallClock: 30m}
  resources: {requests: {cpu: 250m, memory: 256Mi}, limits: {cpu: "1", memory: 1Gi}}
  quota: {pods: "4", requests.cpu: "2", requests.memory: 4Gi}
---
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: pytest, namespace: team-a}
spec:
  description: "Run the test suite and report failures"
  risk: low
  command: {run: ["python", "-m", "pytest", "-q"]}
  inputSchema: {type: object, properties: {path: {type: string}}}
  egress: [{cidr: 10.0.0.0/8, ports: [443]}]
  requires: []
---
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {name: fix-ci, namespace: team-a}
spec:
  description: "Make tests/test_parser.py pass without changing the tests."
  agentRef: {name: coder}
  priority: 10
  dependsOn: [setup-repo]
  timeout: 20m
  maxRetries: 2
"""

SAMPLES = {doc["kind"]: doc for doc in yaml.safe_load_all(SAMPLES_YAML)}
MODELS = {cls.kind_name: cls for cls in KINDS}
CRDS = {cls.kind_name: render_crd(cls) for cls in KINDS}

REQUIRED_COLUMNS = {
    "Goal": ["Phase", "Agent", "Progress", "Tokens", "Age"],
    "Agent": ["Ready", "Running", "Succeeded", "Failed", "Age"],
    "Capability": ["Risk", "Ready"],
}

# What a structural schema node may contain (apiextensions.k8s.io/v1 JSONSchemaProps, minus
# what this project never needs).
ALLOWED_KEYWORDS = {
    "description", "type", "format", "nullable", "enum", "default", "pattern", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
    "maxItems", "multipleOf", "minProperties", "maxProperties", "required", "properties",
    "additionalProperties", "items", "example",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
    "x-kubernetes-validations", "x-kubernetes-embedded-resource",
}
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "not", "title", "const",
                      "uniqueItems", "discriminator", "examples"}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def schema_of(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (.spec.model.name, .spec.capabilities[], ...)."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_nodes() -> list[tuple[str, str, dict[str, Any]]]:
    return [(kind, path, node) for kind in CRDS for path, node in walk(schema_of(kind))]


def validator(kind: str) -> Draft4Validator:
    return Draft4Validator(to_json_schema(schema_of(kind), strict=True))


# --------------------------------------------------------------------------- generated files


def test_crd_files_are_up_to_date() -> None:
    expected = render_all()
    assert sorted(expected) == [
        "overseer.dev_agents.yaml", "overseer.dev_capabilities.yaml", "overseer.dev_goals.yaml"
    ]
    stale = [
        name for name, text in expected.items()
        if not (CRDS_DIR / name).is_file() or (CRDS_DIR / name).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"crds/ is out of date ({', '.join(stale)}): run `make crds`"
    extra = sorted(p.name for p in CRDS_DIR.glob("overseer.dev_*.yaml") if p.name not in expected)
    assert not extra, f"crds/ holds CRDs no model defines ({', '.join(extra)}): run `make crds` and delete them"


def test_generated_files_say_they_are_generated() -> None:
    for name, text in render_all().items():
        first = text.splitlines()[0]
        assert first.startswith("#") and "overseer-crds" in first and "overseer.api" in first, name
        assert "do not edit" in text.splitlines()[0].lower(), name
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_rendering_is_deterministic() -> None:
    assert render_all() == render_all()


def test_check_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "overseer.dev_goals.yaml").write_text("# edited\n", encoding="utf-8")
    (tmp_path / "overseer.dev_agents.yaml").unlink()
    capsys.readouterr()
    assert main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "overseer.dev_goals.yaml" in err and "overseer.dev_agents.yaml" in err
    assert "overseer.dev_capabilities.yaml" not in err
    assert "run make crds" in err


def test_stdout_is_one_multi_document_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["metadata"]["name"] for d in docs] == [
        "agents.overseer.dev", "capabilities.overseer.dev", "goals.overseer.dev"
    ]


# --------------------------------------------------------------------------- CRD shape


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_names_and_version(kind: str) -> None:
    crd = CRDS[kind]
    cls = MODELS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{cls.plural}.overseer.dev"
    assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "overseer"
    spec = crd["spec"]
    assert spec["group"] == "overseer.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": cls.plural,
        "singular": kind.lower(),
        "shortNames": cls.short_names,
        "categories": ["overseer"],
    }
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_root_schema(kind: str) -> None:
    root = schema_of(kind)
    assert root["type"] == "object"
    assert root["description"] == MODELS[kind].__doc__.strip()
    assert root["required"] == ["spec"]
    props = root["properties"]
    assert list(props) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert props["apiVersion"]["type"] == props["kind"]["type"] == "string"
    assert props["metadata"] == {"type": "object"}
    assert props["spec"]["type"] == props["status"]["type"] == "object"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_printer_columns(kind: str) -> None:
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if not c.get("priority")]
    assert [n for n in shown if n in REQUIRED_COLUMNS[kind]] == REQUIRED_COLUMNS[kind]
    paths = {path for _, path, _ in ((k, p, n) for k, p, n in all_nodes() if k == kind)}
    for col in columns:
        assert col["type"] in {"string", "integer", "number", "boolean", "date"}, col
        if col["jsonPath"] == ".metadata.creationTimestamp":
            continue
        field = re.sub(r"\[\?\(.*?\)\]", "[]", col["jsonPath"])
        assert field in paths, f"{kind} column {col['name']} shows {col['jsonPath']}, which the schema lacks"


def test_depends_on_is_documented() -> None:
    node = schema_of("Goal")["properties"]["spec"]["properties"]["dependsOn"]
    assert "Names of Goals in the same namespace" in node["description"]
    assert node["type"] == "array" and node["items"]["type"] == "string"


# --------------------------------------------------------------------------- structural


@pytest.mark.parametrize(
    "kind,path,node", [pytest.param(k, p, n, id=f"{k}{p or '.'}") for k, p, n in all_nodes()]
)
def test_every_node_is_structural(kind: str, path: str, node: dict[str, Any]) -> None:
    where = f"{kind} {path or '(root)'}"
    assert not FORBIDDEN_KEYWORDS & set(node), f"{where}: {sorted(FORBIDDEN_KEYWORDS & set(node))}"
    assert set(node) <= ALLOWED_KEYWORDS, f"{where}: unknown keywords {sorted(set(node) - ALLOWED_KEYWORDS)}"
    if node.get("x-kubernetes-int-or-string"):
        assert "type" not in node, f"{where}: int-or-string must not have a type"
    elif node.get("x-kubernetes-preserve-unknown-fields"):
        assert node.get("type", "object") == "object", where
    else:
        assert node.get("type") in TYPES, f"{where}: every node needs a type"
    if "additionalProperties" in node:
        assert isinstance(node["additionalProperties"], dict), f"{where}: additionalProperties must be a schema"
        assert "properties" not in node, f"{where}: properties and additionalProperties exclude each other"
    for key in ("exclusiveMinimum", "exclusiveMaximum", "nullable"):
        if key in node:
            assert isinstance(node[key], bool), f"{where}: {key} must be a boolean"
    if node.get("type") == "array":
        assert "items" in node, f"{where}: arrays need items"
    if node.get("type") == "object" and "required" in node:
        assert set(node["required"]) <= set(node.get("properties", {})), where
        for name in node["required"]:
            assert "default" not in node["properties"][name], f"{where}.{name} has a default but is required"
    if node.get("x-kubernetes-list-type") == "map":
        items = node["items"]
        assert items["type"] == "object"
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in items.get("required", []) or "default" in items["properties"][key], where
    if "pattern" in node:
        re.compile(node["pattern"])
        # the API server uses Go's RE2: no look-around, no back-references
        assert not re.search(r"\(\?[=!<]|\\[1-9]", node["pattern"]), f"{where}: pattern is not RE2"
    if "default" in node:
        assert path.startswith(".spec."), f"{where}: defaults belong in spec only"
        schema = {k: v for k, v in node.items() if k != "default"}
        assert Draft4Validator(to_json_schema(schema)).is_valid(node["default"]), f"{where}: default fails its schema"
    if path.count(".") >= 2 and not path.endswith(("[]", "{}")):
        assert node.get("description"), f"{where} has no description (kubectl explain shows it)"


def test_defaults_match_the_models() -> None:
    spec = schema_of("Goal")["properties"]["spec"]["properties"]
    assert spec["maxRetries"]["default"] == 1
    assert spec["priority"]["default"] == 0
    assert spec["approvalPolicy"]["properties"]["minRisk"]["default"] == "high"
    cap = schema_of("Capability")["properties"]["spec"]["properties"]
    assert cap["risk"]["default"] == "low"
    assert cap["command"]["properties"]["timeout"]["default"] == "5m"
    assert "default" not in cap["inputSchema"], "no default under x-kubernetes-preserve-unknown-fields"
    assert cap["inputSchema"]["x-kubernetes-preserve-unknown-fields"] is True


def test_quantities_are_int_or_string() -> None:
    spec = schema_of("Agent")["properties"]["spec"]["properties"]
    for node in (spec["quota"]["additionalProperties"],
                 spec["resources"]["properties"]["requests"]["additionalProperties"]):
        assert node["x-kubernetes-int-or-string"] is True and "type" not in node


def test_conditions_are_a_list_map() -> None:
    for kind in CRDS:
        conditions = schema_of(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


# --------------------------------------------------------------------------- CEL rules

CEL_KEYWORDS = {"has", "size", "filter", "all", "exists", "exists_one", "map", "in", "self", "oldSelf",
                "true", "false", "null", "matches", "startsWith", "endsWith", "contains", "x", "k",
                # Kubernetes' CEL libraries and conversions
                "duration", "string", "isCIDR", "isQuantity", "quantity"}
# At the root a rule sees only these metadata fields.
ROOT_METADATA = {"name", "generateName"}


def rules() -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    return [
        (kind, path, node, rule)
        for kind, path, node in all_nodes()
        for rule in node.get("x-kubernetes-validations", [])
    ]


def resolve(node: dict[str, Any], fields: list[str], at_root: bool) -> bool:
    for i, name in enumerate(fields):
        if at_root and i == 1 and fields[0] == "metadata":
            return name in ROOT_METADATA and len(fields) == 2
        props = node.get("properties", {})
        if name not in props:
            return False
        node = props[name]
    return True


@pytest.mark.parametrize(
    "kind,path,node,rule", [pytest.param(*r, id=f"{r[0]}{r[1] or '.'}:{r[3]['rule']}") for r in rules()]
)
def test_cel_rules_name_existing_fields(kind: str, path: str, node: dict[str, Any], rule: dict[str, str]) -> None:
    text = rule["rule"]
    assert set(rule) <= {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}
    assert rule.get("message"), "every rule explains itself"
    if "reason" in rule:
        assert rule["reason"] in {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired",
                                  "FieldValueDuplicate"}
    # balanced brackets and quotes (outside string literals)
    code = re.sub(r"r?'[^']*'|\"[^\"]*\"", "''", text)
    assert code.count("'") % 2 == 0 and code.count('"') % 2 == 0, text
    depth = 0
    for ch in code:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        assert depth >= 0, text
    assert depth == 0, text
    # every self.a.b names fields of the node the rule sits on
    chains = re.findall(r"\b(?:self|oldSelf)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", code)
    assert chains or "self" in code, f"{text} does not look at self"
    for chain in chains:
        fields = [f for f in chain.split(".") if f]
        # a trailing method call (self.x.size()) is not a field
        if re.search(re.escape(chain) + r"\s*\(", code):
            fields = fields[:-1]
        assert resolve(node, fields, at_root=(path == "")), f"{kind} {path}: {text} names {chain}, not in the schema"
    # identifiers outside self-chains are CEL keywords or macros' variables
    bare = set(re.findall(r"(?<![.\w])([A-Za-z_][A-Za-z0-9_]*)", code)) - CEL_KEYWORDS
    assert not bare, f"{text}: unknown identifiers {sorted(bare)}"
    if "fieldPath" in rule:
        fields = [f for f in rule["fieldPath"].split(".") if f]
        assert resolve(node, fields, at_root=False), f"{kind} {path}: fieldPath {rule['fieldPath']} not in the schema"


def test_expected_rules_are_present() -> None:
    def messages(node: dict[str, Any]) -> list[str]:
        return [r["message"] for r in node.get("x-kubernetes-validations", [])]

    goal_spec = schema_of("Goal")["properties"]["spec"]
    cap_spec = schema_of("Capability")["properties"]["spec"]
    assert any("exactly one of agentRef or agentSelector" in m for m in messages(goal_spec))
    assert any("exactly one of command, http or mcp" in m for m in messages(cap_spec))
    assert any("cannot depend on itself" in m for m in messages(schema_of("Goal")))


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_samples_validate_with_models_and_schema(kind: str) -> None:
    sample = SAMPLES[kind]
    obj = MODELS[kind].model_validate(sample)
    assert obj.name == sample["metadata"]["name"]
    errors = [e.message for e in validator(kind).iter_errors(sample)]
    assert not errors, errors
    # what the models write back must pass the schema too
    written = {**obj.to_api(), "metadata": sample["metadata"]}
    errors = [f"{list(e.path)}: {e.message}" for e in validator(kind).iter_errors(written)]
    assert not errors, errors


def test_status_written_by_the_operator_validates() -> None:
    status = GoalStatus.model_validate({
        "phase": "AwaitingApproval",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Dispatched",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "attempt": 1,
        "tokens": {"input": 10, "output": 5, "total": 15},
        "pendingApprovals": [{"id": "a1", "kind": "toolCall", "summary": "rm -rf build",
                              "requestedAt": "2026-01-01T00:01:00Z"}],
        "startedAt": "2026-01-01T00:00:00Z",
    })
    goal = {**SAMPLES["Goal"], "status": status.to_api()}
    errors = [f"{list(e.path)}: {e.message}" for e in validator("Goal").iter_errors(goal)]
    assert not errors, errors


def _with(kind: str, path: list[str], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLES[kind])
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


BAD = [
    ("Capability", ["spec", "risk"], "extreme"),
    ("Goal", ["spec", "priority"], "high"),
    ("Goal", ["spec", "timeout"], "soon"),
    ("Agent", ["spec", "maxConcurrentGoals"], 0),
    ("Goal", ["spec", "priority"], 5000),
    ("Agent", ["spec", "budget", "maxWallClock"], "30 minutes"),
    ("Agent", ["spec", "model", "baseURL"], "ftp://example"),
    ("Capability", ["spec", "command", "run"], []),
    ("Goal", ["spec", "description"], ""),
]


@pytest.mark.parametrize(
    "kind,path,value", [pytest.param(k, p, v, id=f"{'.'.join(p)}={v!r}") for k, p, v in BAD]
)
def test_bad_samples_fail_in_both(kind: str, path: list[str], value: Any) -> None:
    bad = _with(kind, path, value)
    with pytest.raises(ValidationError):
        MODELS[kind].model_validate(bad)
    errors = list(validator(kind).iter_errors(bad))
    assert errors, f"the schema accepts {'.'.join(path)}={value!r}"
    assert any(list(e.absolute_path)[: len(path)] == path or list(e.absolute_path) == path[:-1]
               for e in errors), [(list(e.absolute_path), e.message) for e in errors]


def test_schema_rejects_a_malformed_quantity() -> None:
    assert not validator("Agent").is_valid(_with("Agent", ["spec", "quota", "pods"], "four"))
    assert validator("Agent").is_valid(_with("Agent", ["spec", "quota", "pods"], 4))


def test_missing_spec_fails_in_both() -> None:
    bad = {k: v for k, v in SAMPLES["Goal"].items() if k != "spec"}
    with pytest.raises(ValidationError):
        Goal.model_validate(bad)
    assert not validator("Goal").is_valid(bad)


def test_unknown_field_is_reported_by_the_strict_schema() -> None:
    bad = _with("Capability", ["spec", "riskLevel"], "low")
    assert not validator("Capability").is_valid(bad)
    Capability.model_validate(bad)  # the models ignore unknown fields (the API server prunes them)
    Agent.model_validate(SAMPLES["Agent"])
