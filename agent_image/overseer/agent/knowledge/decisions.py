"""The approvals audit: each decision on a goal's approval request, the first one standing."""

from __future__ import annotations

from typing import Any

import psycopg

from .spool import Write

DECISIONS = """
SELECT goal_uid, approval_id, kind, summary, decision, decided_by, decided_at, reason
FROM decisions WHERE namespace = %(namespace)s AND goal_uid = %(goal_uid)s ORDER BY decided_at, id
"""

INSERT_DECISION = """
INSERT INTO decisions (namespace, goal_uid, approval_id, kind, summary, decision, decided_by, decided_at, reason)
VALUES (%(namespace)s, %(goal_uid)s, %(approval_id)s, %(kind)s, %(summary)s, %(decision)s, %(decided_by)s,
        %(decided_at)s, %(reason)s)
ON CONFLICT (namespace, goal_uid, approval_id) DO NOTHING
"""


async def apply_decision(conn: psycopg.AsyncConnection[Any], write: Write) -> None:
    await conn.execute(INSERT_DECISION, write.args)
