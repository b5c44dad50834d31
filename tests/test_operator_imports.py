"""The operator never imports the model SDK: importing it costs seconds of CPU at start (tens on
a busy machine) and tens of MB for good, for one small table it can read from the SDK's data."""

from __future__ import annotations

import json
import subprocess
import sys

from overseer.operator.agents import deprecated_models


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running code."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.splitlines()[-1])


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
