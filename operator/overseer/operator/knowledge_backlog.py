"""The Agent's KnowledgeBase condition from what its goals' agents see.

The operator's admin login tells whether a namespace's login exists (knowledge_tenants); only the
writers see PostgreSQL refuse a write, a full disk above all (reads, and so a login check, still
work). Each running goal's agent reports its waiting writes in status.knowledgeBacklog; this sums
them up for the Agent, and the condition clears once the agents report their writes stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .knowledge_tenants import Access

DISK_FULL = "DiskFull"
WRITES_QUEUED = "WritesQueued"
NAMED = 5  # goals named in the message; the rest are counted


def knowledge_condition(access: Access, goals: Sequence[dict[str, Any]]) -> Access:
    """`access` (the login's state) unless it is ready and some of `goals` (the Agent's running goals
    reporting a knowledge backlog) hold writes: then False, DiskFull when PostgreSQL's disk is full."""
    if not access.ready or not goals:
        return access
    backlogs = [(g["metadata"]["name"], g["status"]["knowledgeBacklog"]) for g in goals]
    full = [(name, b) for name, b in backlogs if b.get("reason") == DISK_FULL]
    shown = full or backlogs
    names = ", ".join(name for name, _ in shown[:NAMED]) + (f" and {len(shown) - NAMED} more" if len(shown) > NAMED else "")
    writes = sum(int(b.get("queuedWrites") or 0) for _, b in shown)
    since = min((b.get("since") or "" for _, b in shown), default="") or "a moment ago"
    first = shown[0][1].get("message") or ""
    if full:
        return Access(False, DISK_FULL,
                      f"PostgreSQL's disk is full: it refuses the knowledge-base writes of goal{'s' * (len(shown) > 1)} "
                      f"{names} since {since}; {writes} write{'s' * (writes != 1)} wait{'s' * (writes == 1)} in their "
                      f"pods, stored once it has space. Free space on the knowledge base's PostgreSQL "
                      f"volume or give it a larger one. A goal reports: {first}")
    return Access(False, WRITES_QUEUED,
                  f"goal{'s' * (len(shown) > 1)} {names} cannot store knowledge-base writes since {since}; {writes} "
                  f"wait{'s' * (writes == 1)} in their pods, stored once PostgreSQL takes them. A goal reports: {first}")
