"""Adversarial shell commands (tests/data/shell_corpus.yaml), each with the class the classifier
must give it, and the approval it leads to under the default policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from overseer.agent.tools import BashTool, ToolContext, ToolRegistry, classify_command

CORPUS_FILE = Path(__file__).parent / "data" / "shell_corpus.yaml"
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text())
LEVELS = ["read-only", "writes-workspace", "runs-code", "dangerous"]

# Every form issue "Code execution is gated" names, as written there.
NAMED_FORMS = [
    "python3 -c", "perl -e", "node -e", "<<EOF", "base64 -d", "trap '", "env -S", "hash -p", "${x:-$(",
    "$(( $(", "sed -n '1e", "/w ", "git -c core.fsmonitor=", "git -c diff.external=", "--open-files-in-pager",
    "/proc/$PPID/environ", "eval", "source", "xargs", "find . -exec", "system(", "printenv", "export -p",
]


def test_the_corpus_is_large_and_covers_every_named_form() -> None:
    assert len(CORPUS) >= 200
    commands = [entry["command"] for entry in CORPUS]
    assert len(set(commands)) == len(commands), "a command is listed twice"
    missing = [form for form in NAMED_FORMS if not any(form in c for c in commands)]
    assert not missing
    assert all(entry["level"] in LEVELS and entry["why"] for entry in CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=[e["command"][:60] for e in CORPUS])
def test_corpus_command(entry: dict[str, Any]) -> None:
    result = classify_command(entry["command"])
    assert result.level == entry["level"], f"{entry['why']}; the classifier says: {result.reason}"


@pytest.mark.parametrize("entry", [e for e in CORPUS if e["level"] == "runs-code"][:40],
                         ids=lambda e: e["command"][:40])
def test_code_waits_for_a_person_unless_the_agent_allows_it(entry: dict[str, Any], tmp_path: Path) -> None:
    registry = ToolRegistry([BashTool()])
    by_default = registry.assess("bash", {"command": entry["command"]}, ToolContext(workspace=tmp_path))
    allowed = registry.assess("bash", {"command": entry["command"]},
                              ToolContext(workspace=tmp_path, code_execution="Allowed"))
    assert (by_default.risk, allowed.risk) == ("high", "medium")
