"""What a knowledge base's queued writes say to a person: why PostgreSQL refused them, what waits,
and what puts it right. The agent shows it in its goal's status and in Events (knowledge_report);
the operator sums the goals' reports up in their Agent's KnowledgeBase condition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .spool import Write

DISK_FULL = "DiskFull"
UNAVAILABLE = "Unavailable"
MESSAGE_MAX = 1000  # status.knowledgeBacklog.message holds 1,024 characters

_NAMES = {"checkpoint": ("checkpoint", "checkpoints"), "drop_checkpoint": ("checkpoint removal", "checkpoint removals"),
          "experience": ("experience", "experiences"), "lesson_use": ("lesson use", "lesson uses"),
          "decision": ("approval decision", "approval decisions")}


def refusal_reason(exc: BaseException) -> str:
    """DiskFull for PostgreSQL's disk_full (SQLSTATE 53100), else Unavailable: both are waited out, but
    only a person freeing space ends the first."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return DISK_FULL if sqlstate == "53100" else UNAVAILABLE


@dataclass(frozen=True)
class Backlog:
    """Writes waiting for PostgreSQL, and why."""

    reason: str
    error: str
    queued: int
    waiting: str  # e.g. "1 checkpoint, 1 experience"
    since: str  # RFC 3339, when the first of them was refused

    @property
    def message(self) -> str:
        wait = "wait" if self.queued > 1 else "waits"
        if self.reason == DISK_FULL:
            head = (f"PostgreSQL refused this goal's knowledge-base writes: its disk is full ({self.error}). "
                    f"{self.waiting} {wait} in the agent's memory and spool file, stored in order once it has "
                    f"space; free space on the knowledge base's PostgreSQL volume or give it a larger one. Reads "
                    f"(checkpoints, lessons) still work")
        else:
            head = (f"the knowledge base's PostgreSQL does not take this goal's writes ({self.error}). {self.waiting} "
                    f"{wait} in the agent's memory and spool file, stored in order once it answers")
        return head if len(head) <= MESSAGE_MAX else head[:MESSAGE_MAX - 3] + "..."

    def to_status(self) -> dict[str, Any]:
        """status.knowledgeBacklog of the goal."""
        return {"reason": self.reason, "message": self.message, "queuedWrites": self.queued, "since": self.since}


def waiting(queue: Iterable[Write]) -> str:
    """The queued writes by kind, e.g. "1 checkpoint, 2 experiences"."""
    counts = Counter(w.op for w in queue)
    return ", ".join(f"{n} {_NAMES.get(op, (op, op + 's'))[n != 1]}" for op, n in counts.items())


def one_line(exc: BaseException) -> str:
    """PostgreSQL's message without its context lines."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
