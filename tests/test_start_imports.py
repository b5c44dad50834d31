"""What a goal pod and the operator import on their way to work: every module costs CPU at each
start (docs/performance.md, Start). Budgets are counted in modules, which do not depend on the
machine's load; the start benchmark measures the seconds."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from overseer.operator.agents import deprecated_models

# Everything a goal pod runs before its first model request: the agent's modules, the client.
AGENT_START = """
import os
os.environ["ANTHROPIC_API_KEY"] = "x"
import overseer.agent.main
from overseer.agent.backoff import model_client
model_client().messages
"""
# Measured when these budgets were set: 995 modules in all, 350 of them the SDK's (a plain
# `import anthropic` alone loads 3,606, 3,162 of them the SDK's).
AGENT_MODULE_BUDGET = 1050
SDK_MODULE_BUDGET = 380
# What a goal pod needs only with a knowledge base, Redis, an HTTP Capability called, or never.
NOT_AT_AGENT_START = ("kubernetes", "kopf", "psycopg", "redis", "aiohttp", "jsonschema")


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
    assert "anthropic.types.beta.beta_message" not in modules, "the beta Messages API's types came in"
    assert "anthropic._error_classes" in modules and "anthropic.types.tool_name_conflict_error" not in modules, \
        "the error classes of every API loaded before any error"
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


def test_the_sdks_deferred_parts_work_when_used() -> None:
    """What sdk.DEFERRED and sdk.MOVED hold back loads at its first use and does what it would
    have done: the error class of an error code, a span's attributes, a beta response parsed."""
    modules_after("""
import sys
import httpx2
from overseer.agent.sdk import anthropic
from anthropic._base_client import make_status_error
from anthropic.lib._tracing import messages_create_request_attributes
from anthropic.lib._parse._response import parse_beta_response
assert "anthropic.types.beta.beta_message" not in sys.modules
response = httpx2.Response(400, request=httpx2.Request("POST", "http://127.0.0.1/v1/messages"))
error = make_status_error("conflict", body={"error": {"details": {"error_code": "tool_name_conflict"}}},
                          response=response)
assert type(error).__name__ == "ToolNameConflictError", type(error)
assert messages_create_request_attributes({"output_config": {"format": {"type": "json_schema"}}}) == \\
    {"gen_ai.output.type": "json"}
from anthropic.lib._parse import _response
from anthropic.types.beta.beta_message import BetaMessage
assert _response.BetaMessage is BetaMessage
message = BetaMessage.model_validate({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1}})
assert parse_beta_response(output_format=anthropic.NOT_GIVEN, response=message).content[0].text == "hi"
""")


def test_a_goal_pods_client_has_spans_only_with_a_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a tracer provider OpenTelemetry's spans neither record nor propagate: the client
    makes none (and loads no tracing code); with one named by the environment it traces."""
    from overseer.agent.backoff import model_client

    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    assert model_client()._open_telemetry["traces"]["enabled"] is False
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    assert model_client()._open_telemetry["traces"]["enabled"] is True


SOURCE = '''from __future__ import annotations
from .a import Big, Small
X = Small
def f() -> Big:
    """doc"""
    return Big()
'''


def test_imports_move_into_the_functions_that_use_them() -> None:
    from overseer.agent.sdk import move_imports

    tree = ast.parse(SOURCE)
    assert set(move_imports(tree, {"Big"})) == {"Big"}
    assert ast.unparse(tree) == ast.unparse(ast.parse('''from __future__ import annotations
from .a import Small
X = Small
def f() -> Big:
    """doc"""
    from .a import Big
    return Big()
'''))


@pytest.mark.parametrize("names, source", [({"Small"}, SOURCE),  # used at import
                                           ({"Big"}, SOURCE.replace("from __future__ import annotations\n", ""))])
def test_imports_stay_where_module_level_code_needs_them(names: set[str], source: str) -> None:
    from overseer.agent.sdk import move_imports

    tree = ast.parse(source)
    assert move_imports(tree, names) == {}
    assert ast.unparse(tree) == ast.unparse(ast.parse(source))


def test_a_plain_http_model_url_costs_no_ca_bundle_and_refuses_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway reached over plain HTTP needs no CA bundle (loading it was tens of ms of every
    start); the context the client holds instead trusts nothing, so TLS (a redirect to https)
    fails rather than going unverified. Over https, or through a proxy, the CAs are loaded."""
    import ssl

    from overseer.agent.backoff import PROXY_VARIABLES, model_client

    def trusted(url: str, **env: str) -> tuple[int, ssl.VerifyMode]:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        ctx = model_client()._client._transport._pool._ssl_context  # type: ignore[attr-defined]
        return ctx.cert_store_stats()["x509_ca"], ctx.verify_mode

    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    assert trusted("http://overseer-gateway.overseer:8080") == (0, ssl.CERT_REQUIRED)
    assert trusted("https://api.anthropic.com")[0] > 0
    assert trusted("http://overseer-gateway.overseer:8080", HTTPS_PROXY="https://proxy:3128")[0] > 0
