"""Builders of Agents, Goals and Capabilities as a user would write them, and operator settings."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from overseer.api import Agent, Capability, Goal
from overseer.operator.settings import Settings

NAMESPACE = "team-a"
CREATED = "2026-01-01T00:00:00Z"


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """base with overrides laid over it; nested mappings are merged, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _metadata(kind: str, name: str, namespace: str, labels: dict[str, str] | None,
              created: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{kind.lower()}-{namespace}-{name}",
        "generation": 1,
        "creationTimestamp": created,
        "labels": dict(labels or {}),
    }


def build_agent(name: str = "coder", namespace: str = NAMESPACE, *, labels: dict[str, str] | None = None,
                **spec_overrides: Any) -> Agent:
    """An Agent with a model and an API key Secret; keyword arguments override spec fields
    (snake_case or camelCase; nested mappings such as model are merged)."""
    spec = {"model": {"name": "claude-sonnet-5-5", "apiKeySecretRef": {"name": "anthropic", "key": "api-key"}}}
    return Agent.model_validate({
        "metadata": _metadata("Agent", name, namespace, labels, CREATED),
        "spec": _merged(spec, spec_overrides),
    })


def build_goal(name: str = "fix-ci", namespace: str = NAMESPACE, *, agent: str = "coder",
               created: str = CREATED, **spec_overrides: Any) -> Goal:
    """A Goal for the named agent; keyword arguments override spec fields."""
    spec = {"description": "Make tests/test_parser.py pass without changing the tests.", "agentRef": {"name": agent}}
    return Goal.model_validate({
        "metadata": _metadata("Goal", name, namespace, None, created),
        "spec": _merged(spec, spec_overrides),
    })


def build_capability(name: str = "pytest", namespace: str = NAMESPACE, **spec_overrides: Any) -> Capability:
    """A command Capability; keyword arguments override spec fields."""
    spec = {"description": "Run the test suite and report failures", "command": {"run": ["python", "-m", "pytest"]}}
    return Capability.model_validate({
        "metadata": _metadata("Capability", name, namespace, None, CREATED),
        "spec": _merged(spec, spec_overrides),
    })


@pytest.fixture
def make_agent() -> Callable[..., Agent]:
    return build_agent


@pytest.fixture
def make_goal() -> Callable[..., Goal]:
    return build_goal


@pytest.fixture
def make_capability() -> Callable[..., Capability]:
    return build_capability


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OVERSEER_* variable of the surrounding shell reaches the test."""
    for var in [v for v in os.environ if v.upper().startswith("OVERSEER_")]:
        monkeypatch.delenv(var)
    yield monkeypatch


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    """The operator's defaults, whatever the environment of the test run holds."""
    return Settings()


@pytest.fixture
def path_without(tmp_path: Path):
    """PATH as it is, less the named commands: every other command linked into one folder."""
    def build(*absent: str) -> str:
        folder = tmp_path / "bin"
        folder.mkdir()
        for directory in os.environ["PATH"].split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                target = Path(directory, name)
                if name not in absent and not (folder / name).exists() and os.access(target, os.X_OK):
                    (folder / name).symlink_to(target)
        return str(folder)
    return build
