"""Goals learn from each other through the shared knowledge base (a real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from e2e.test_agent_runtime import text, tool
from e2e.world import World
from tests.integration.conftest import postgres, redis_server  # noqa: F401 - shared server fixtures


@pytest.fixture
def operator_env(postgres: Any, redis_server: Any) -> dict[str, str]:  # noqa: F811
    return {"OVERSEER_KNOWLEDGE_ADMIN_URL": postgres.dsn, "OVERSEER_AGENT_REDIS_URL": redis_server.url}


def test_lessons_from_one_goal_reach_the_next_ones_prompt(world: World, agents: Any, postgres: Any) -> None:  # noqa: F811
    description = "Fix the failing parser tests in the billing service"
    model, runner = agents({
        "first": [tool("bash", command="echo 42"), text("Parser tests fixed by running them first.")],
        "second": [text("Done, using what worked before.")],
    })
    world.goal("first", description=description)
    world.wait_phase("first", "Succeeded", timeout=60)
    world.goal("second", description=description)
    world.wait_phase("second", "Succeeded", timeout=60)

    second = [r for r in model.requests() if r["conversation"].endswith("/second")][0]
    system = " ".join(block["text"] for block in second["body"]["system"])
    assert "Lessons from earlier goals" in system and "bash" in system, system
    with psycopg.connect(postgres.dsn) as db:
        rows = db.execute("SELECT goal_name, success FROM experiences ORDER BY id").fetchall()
        assert ("first", True) in rows and ("second", True) in rows
        assert db.execute("SELECT count(*) FROM checkpoint_messages").fetchone()[0] > 0
