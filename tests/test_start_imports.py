"""What a goal pod and the operator import on their way to work: every module costs CPU at each
start (docs/performance.md, Start). Budgets are counted in modules, which do not depend on the
machine's load; the start benchmark measures the seconds."""

from __future__ import annotations

import json
import subprocess
import sys

from overseer.operator.agents import deprecated_models

# Everything a goal pod runs before its first model request: the agent's modules, the client.
AGENT_START = """
import os
os.environ["ANTHROPIC_API_KEY"] = "x"
import overseer.agent.main
from overseer.agent.backoff import model_client
model_client().messages
"""
# Measured when these budgets were set: 1,682 modules in all, 1,064 of them the SDK's (a plain
# `import anthropic` alone loads 3,606, 3,162 of them the SDK's).
AGENT_MODULE_BUDGET = 1850
SDK_MODULE_BUDGET = 1150
# What a goal pod needs only with a knowledge base, Redis, or never.
NOT_AT_AGENT_START = ("kubernetes", "kopf", "psycopg", "redis")


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running code."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=900)  # a loaded machine is slow, not wrong
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_goal_pod_imports_only_what_its_first_request_needs() -> None:
    modules = modules_after(AGENT_START)
    roots = {m.split(".")[0] for m in modules}
    assert not roots & set(NOT_AT_AGENT_START), sorted(roots & set(NOT_AT_AGENT_START))
    sdk = [m for m in modules if m.split(".")[0] == "anthropic"]
    assert "anthropic.resources.beta.organization" not in modules, "the SDK's API tree came in whole"
    assert len(sdk) <= SDK_MODULE_BUDGET, f"{len(sdk)} SDK modules at a goal pod's start (budget {SDK_MODULE_BUDGET})"
    assert len(modules) <= AGENT_MODULE_BUDGET, f"{len(modules)} modules at start (budget {AGENT_MODULE_BUDGET})"


def test_the_operator_never_imports_the_model_sdk() -> None:
    modules = modules_after("""
import overseer.operator.main, overseer.operator.handlers
from overseer.operator.agents import deprecated_models
assert deprecated_models()
""")
    assert [m for m in modules if m.split(".")[0] == "anthropic"] == []


def test_the_deprecation_table_is_the_installed_sdks() -> None:
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    assert DEPRECATED_MODELS, "the SDK lists deprecated models (else this test proves nothing)"
    assert deprecated_models() == dict(DEPRECATED_MODELS)


def test_the_lazy_sdk_is_the_sdk() -> None:
    """Names come from the modules a plain import would take them from; one the package's
    __init__ makes some other way runs that __init__, so nothing the SDK offers goes missing."""
    modules = modules_after("""
from overseer.agent.sdk import anthropic
import anthropic._exceptions, anthropic.types.message
assert anthropic.APIStatusError is anthropic._exceptions.APIStatusError
assert anthropic.types.Message is anthropic.types.message.Message
assert "anthropic.resources.beta.organization" not in __import__("sys").modules
assert anthropic.AnthropicVertex.__name__ == "AnthropicVertex"  # star-imported by anthropic/__init__
""")
    assert "anthropic.lib.vertex" in modules
