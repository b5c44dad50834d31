"""`search_knowledge`: ask the namespace's knowledge base (and what other namespaces share with
it) for lessons from earlier goals, beyond the few the prompt starts with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .base import Tool, ToolContext, ToolResult, shorten

UNAVAILABLE = "The knowledge base is unreachable right now, so there are no lessons to show. Carry on without them."


class LessonLike(Protocol):
    text: str


class LessonSource(Protocol):
    """What the tool needs of a KnowledgeBase."""

    @property
    def healthy(self) -> bool: ...
    async def lessons(self, description: str, agent: str, limit: int = 5) -> Sequence[LessonLike]: ...


def render_lessons(query: str, lessons: Sequence[LessonLike]) -> str:
    """The lessons as a numbered list, best first."""
    if not lessons:
        return f"No lessons from earlier goals match {query!r}. Try other words, or carry on without."
    lines = [f"Lessons from earlier goals matching {query!r}, best first:"]
    lines += [f"{n}. {lesson.text}" for n, lesson in enumerate(lessons, 1)]
    return "\n".join(lines)


class SearchKnowledge(Tool):
    name = "search_knowledge"
    description = (
        "Search the knowledge base of this namespace's agents for lessons from earlier goals: approaches "
        "that worked (and how often), and errors others ran into. Describe the task or paste an error message. "
        "Useful before starting a kind of task new to you here, and when stuck on an error."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 4000,
                      "description": "A task description or an error message."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5,
                      "description": "How many lessons at most (default 5)."},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    risk = "low"
    side_effects = False

    def __init__(self, kb: LessonSource, agent: str) -> None:
        self.kb = kb
        self.agent = agent

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        query = str(input["query"]).strip()
        lessons = await self.kb.lessons(query, self.agent, int(input.get("limit") or 5)) if query else []
        if not lessons and not self.kb.healthy:
            # Not an error: nothing the model did wrong, and nothing it can fix.
            return ToolResult(UNAVAILABLE, summary="knowledge base unreachable")
        return ToolResult(render_lessons(query, lessons),
                          summary=shorten(f"{len(lessons)} lesson(s) for {query!r}"))
