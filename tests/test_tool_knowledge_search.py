"""search_knowledge: numbered lessons from the knowledge base, and a plain note when it is away."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overseer.agent.tools import ToolContext, ToolRegistry
from overseer.agent.tools.knowledge_search import UNAVAILABLE, SearchKnowledge


@dataclass
class Lesson:
    text: str


@dataclass
class FakeKnowledgeBase:
    found: list[Lesson]
    healthy: bool = True
    asked: list[tuple[str, str, int]] = field(default_factory=list)

    async def lessons(self, description: str, agent: str, limit: int = 5) -> list[Lesson]:
        self.asked.append((description, agent, limit))
        return self.found[:limit]


async def run(kb: FakeKnowledgeBase, tmp_path: Path, **args: Any) -> Any:
    registry = ToolRegistry([SearchKnowledge(kb, "coder")])
    return await registry.run("search_knowledge", args, ToolContext(workspace=tmp_path))


async def test_lessons_come_back_numbered_best_first(tmp_path: Path) -> None:
    kb = FakeKnowledgeBase([Lesson("Run pytest -x first."), Lesson("The parser needs Python 3.11.")])
    result = await run(kb, tmp_path, query="fix the parser tests", limit=3)
    assert not result.is_error
    assert "1. Run pytest -x first.\n2. The parser needs Python 3.11." in result.content
    assert kb.asked == [("fix the parser tests", "coder", 3)]


async def test_no_match_says_so(tmp_path: Path) -> None:
    result = await run(FakeKnowledgeBase([]), tmp_path, query="deploy the billing service")
    assert not result.is_error and "No lessons" in result.content


async def test_an_unreachable_knowledge_base_is_a_note_not_an_error(tmp_path: Path) -> None:
    result = await run(FakeKnowledgeBase([], healthy=False), tmp_path, query="anything")
    assert not result.is_error and result.content == UNAVAILABLE


async def test_it_is_a_low_risk_read(tmp_path: Path) -> None:
    registry = ToolRegistry([SearchKnowledge(FakeKnowledgeBase([]), "coder")])
    assert registry.assess("search_knowledge", {"query": "x"}, ToolContext(workspace=tmp_path)).risk == "low"
    assert registry.validate("search_knowledge", {}) is not None
