"""Types shared by the three resources: names, conditions, durations, quantities."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "overseer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "overseer"

# Labels and annotations the operator and its users share.
LABEL_AGENT = f"{GROUP}/agent"
LABEL_GOAL = f"{GROUP}/goal"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_WARM = f"{GROUP}/warm"  # an idle pod of an Agent's warm pool, not claimed by a goal yet
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MAX_SUBGOAL_DEPTH = 10
"""The deepest sub-goal that runs (the operator fails deeper ones TooDeep; the gateway charges a call to
at most this many ancestors): a chain of sub-goals each waiting for the next holds a pod per level."""
MANAGED_BY = "overseer"
ANNOTATION_EXIT_CODE = f"{GROUP}/exit-code"

Risk = Literal["low", "medium", "high"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
"""The one ordering of risks: of a tool call, of a Capability, and of a Goal's
approvalPolicy.minRisk (the lower the threshold, the more calls wait for a person)."""


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        # The API server prunes unknown fields; ignoring them here keeps an older
        # operator working against objects written by a newer schema.
        extra="ignore",
        # A field's docstring is its description in the CRDs; overseer.api.crd reads them when it
        # makes the schemas. pydantic's use_attribute_docstrings would parse each model's source at
        # every import, a cost every process's start (a goal pod's first of all) paid for nothing.
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API wants it: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
# At most four parts of at most five digits (nine for ms): whatever it adds up to fits Go's
# time.Duration, so the API server's CEL duration() can read it, and Python's datetime.
DURATION_PATTERN = r"^(([0-9]{1,5}(\.[0-9]{1,9})?(h|m|s))|([0-9]{1,9}ms)){1,4}$"
MAX_DURATION = "8760h"
"""The longest duration any field takes: a year."""


def parse_duration(text: str) -> timedelta:
    """`1h30m` -> timedelta(hours=1, minutes=30). Raises ValueError on anything else, or past a year."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 90s, 20m or 1h30m")
    value = timedelta(seconds=sum(float(n) * units[u] for n, u in _DURATION_PART.findall(text)))
    if value > timedelta(hours=int(MAX_DURATION[:-1])):
        raise ValueError(f"{text!r} is longer than {MAX_DURATION}")
    return value


def _at_most_max(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=64,
        examples=["90s", "20m", "1h30m"],
        json_schema_extra={
            "x-kubernetes-validations": [{
                "rule": f"self.matches(r'{DURATION_PATTERN}') && duration(self) <= duration('{MAX_DURATION}')",
                "message": f"must be a duration like 90s, 20m or 1h30m, of at most {MAX_DURATION}",
            }]
        },
    ),
    AfterValidator(_at_most_max),
]
"""A length of time written like Go's time.Duration: `90s`, `20m`, `1h30m`, at most a year."""


# A Kubernetes quantity as resource.Quantity parses it: binary suffixes are Ki, Mi, Gi...
# (never ki or mi), decimal ones n, u, m, k, M, G, T, P, E, or an exponent.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"

Quantity = Annotated[
    int | str,
    # kept as a string: a number written in YAML (memory: 1000000000000) renders as a quantity string,
    # which is what the pod, quota and client models take
    AfterValidator(str),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN, "maxLength": 64}),
]
"""A Kubernetes resource quantity: `250m`, `1Gi`, `4`."""


OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
"""A Kubernetes object name (DNS subdomain): no namespace/ prefix, so a reference stays in its namespace."""


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the object in the same namespace."""


class SecretKeySelector(ApiModel):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the Secret."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key inside the Secret's data."""


LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
"""A label key: an optional DNS subdomain prefix and '/', then a name (as the API server checks it).
No backslash in it: it is also written into a CEL string literal."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A label value: empty, or alphanumerics with '-', '_' or '.' inside."""


class LabelSelectorRequirement(ApiModel):
    key: str = Field(max_length=317, pattern=LABEL_KEY)
    """The label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[str] = Field(default_factory=list, max_length=64, json_schema_extra={
        "items": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}})
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector; an empty selector matches everything. Keys and values are
    checked as the API server checks them in the objects rendered from it (a NetworkPolicy's peers)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": f"!has(self.matchLabels) || self.matchLabels.all(k, k.size() <= 317 && k.matches('{LABEL_KEY}'))",
        "message": "matchLabels keys must be label keys: an optional DNS prefix and '/', then alphanumerics with "
                   "'-', '_' or '.' inside, e.g. app.kubernetes.io/name"}]})

    match_labels: dict[str, str] = Field(default_factory=dict, json_schema_extra={
        "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}})
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)
    """Set-based requirements that must all hold."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of an object's state, as the Kubernetes API conventions describe."""

    type: str
    """CamelCase name of the aspect, e.g. Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """CamelCase, machine-readable cause of the last transition."""
    message: str = ""
    """Human-readable details."""
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    """When status last changed."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class PrinterColumn(BaseModel):
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0


class CustomResource(ApiModel):
    """Base of the three top-level kinds; class variables describe the CRD."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[list[str]] = []
    printer_columns: ClassVar[list[PrinterColumn]] = []
    selectable_fields: ClassVar[list[str]] = []  # JSON paths a list or watch may select on (fieldSelector)

    api_version: Literal["overseer.dev/v1alpha1"] = "overseer.dev/v1alpha1"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        name: str = self.metadata.get("name", "")
        return name

    @property
    def namespace(self) -> str:
        namespace: str = self.metadata.get("namespace", "")
        return namespace

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation") or 0)
