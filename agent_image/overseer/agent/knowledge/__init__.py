"""The knowledge base in PostgreSQL: checkpoints, experiences, patterns, lessons and the
approvals audit of one namespace.

- store: `KnowledgeBase`, the connection, the write queue and its replay after an outage;
- spool: the queued writes and the local file that keeps them across a crash;
- checkpoints: a goal's messages and loop state (`GoalCheckpoints`, what the loop is given);
- lessons: experiences, and the lessons found for a new goal;
- decisions: the approvals audit;
- records: what is stored and handed back.

The schema and its migrations are shared with the operator, which applies them:
overseer.knowledge_schema.
"""

from .checkpoints import GoalCheckpoints
from .records import Action, Decision, Experience, Lesson
from .store import KnowledgeBase, Unavailable

__all__ = ["Action", "Decision", "Experience", "GoalCheckpoints", "KnowledgeBase", "Lesson", "Unavailable"]
