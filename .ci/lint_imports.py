"""import-linter over the `overseer` package, which two folders hold.

setuptools maps `overseer` to operator/overseer and `overseer.agent` to
agent_image/overseer/agent (pyproject.toml), but import-linter walks one folder per root
package: shown only the first, it would not see the agent runtime at all. So the package's
search path is widened to both folders before the contracts in pyproject.toml are checked.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = [str(ROOT / "operator" / "overseer"), str(ROOT / "agent_image" / "overseer")]

_find_spec = importlib.util.find_spec


def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
    spec = _find_spec(name, package)
    if name == "overseer" and spec is not None:
        spec.submodule_search_locations = FOLDERS
    return spec


importlib.util.find_spec = find_spec
sys.path.insert(0, str(ROOT))  # tests and e2e are checked too

from importlinter.cli import lint_imports_command  # noqa: E402 - after the search path is widened

sys.exit(lint_imports_command())
