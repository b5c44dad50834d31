"""The knowledge base against a real PostgreSQL: migrations, checkpoints, learning, the
approvals audit, and writes that survive an outage or a crash."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from e2e.bench.knowledge import seed_experiences
from overseer.agent.knowledge import Action, Experience, KnowledgeBase
from overseer import knowledge_schema
from overseer.knowledge_schema import MIGRATIONS, migrate
from overseer.operator.knowledge_tenants import provision_login
from tests.support.servers import PostgresServer


@pytest.fixture
def dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"kb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def kb(dsn: str, tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    """Namespace team-a's knowledge base, opened with its own login as its goal pods open it (lessons
    are only found for the namespace of the login: the owner, with none, gets none)."""
    login = await provision_login(dsn, "team-a")
    base = KnowledgeBase(login, namespace="team-a", spool=tmp_path / "knowledge.spool", retry_delay=0.1, max_retry_delay=0.5)
    assert await base.open()
    yield base
    await base.close()


@pytest.fixture
def outage(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The server, to be stopped by the test; it is running again afterwards whatever happens."""
    yield postgres
    try:
        postgres.start()
    except RuntimeError:  # the test started it again already
        pass


def turn(i: int) -> dict[str, Any]:
    role = "user" if i % 2 == 0 else "assistant"
    return {"role": role, "content": [{"type": "text", "text": f"turn {i}"}]}


def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def experience(description: str, success: bool, tools: list[tuple[str, str]], *, error: str | None = None,
               outcome: str = "", agent: str = "coder") -> Experience:
    return Experience(goal_uid=str(uuid.uuid4()), goal_name="goal", namespace="team-a", agent=agent,
                      description=description, success=success, outcome=outcome,
                      actions=[Action(tool, note) for tool, note in tools], tokens=1200,
                      duration_seconds=42.0, error=error)


PYTEST_FIRST = [("bash", "pytest -x: 1 failed"), ("edit_file", "parser.py"), ("bash", "pytest: all passed")]
READ_AROUND = [("read_file", "parser.py"), ("edit_file", "parser.py")]
HELM = [("bash", "helm upgrade"), ("bash", "kubectl rollout status")]


# ---- migrations ------------------------------------------------------------------------------


async def test_migrations_apply_once_and_again_as_no_ops(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await migrate(conn) == [v for v, _, _ in MIGRATIONS]
        assert await migrate(conn) == []
    versions = rows(dsn, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == [v for v, _, _ in MIGRATIONS]


async def test_pods_starting_together_migrate_exactly_once(dsn: str) -> None:
    async def start_pod() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await migrate(conn)

    applied = await asyncio.gather(*(start_pod() for _ in range(8)))
    assert sorted(v for versions in applied for v in versions) == [v for v, _, _ in MIGRATIONS]
    assert rows(dsn, "SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


SEED_FUNCTIONS = "SELECT count(*) FROM pg_proc WHERE proname = 'overseer_seed_experiences'"


async def test_the_product_schema_cannot_seed_benchmark_experiences(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        monkeypatch.setattr(knowledge_schema, "MIGRATIONS", MIGRATIONS[:3])
        await migrate(conn)
        assert rows(dsn, SEED_FUNCTIONS) == [(0,)]  # a fresh database never gets it
        # what migrations 2 and 3 created before the benchmarks took the seed over
        await conn.execute("CREATE FUNCTION overseer_seed_experiences(n integer, agent_name text, until timestamptz, "
                           "step interval, namespace_name text) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'")
        monkeypatch.undo()
        assert await migrate(conn) == [v for v, _, _ in MIGRATIONS[3:]]
    assert rows(dsn, SEED_FUNCTIONS) == [(0,)]


# ---- checkpoints -----------------------------------------------------------------------------


async def test_a_replaced_pod_resumes_from_the_last_checkpoint(kb: KnowledgeBase, dsn: str) -> None:
    await kb.save_checkpoint("g1", 1, [turn(0), turn(1)], {"items": [{"text": "read", "done": True}]},
                             {"iteration": 1, "input": 100, "output": 20, "tool_calls": 1})
    await kb.save_checkpoint("g1", 2, [turn(2), turn(3)], {"items": [{"text": "fix", "done": False}]},
                             {"iteration": 2, "input": 250, "output": 60, "tool_calls": 3})

    async with KnowledgeBase(dsn, namespace="team-a") as replacement:
        checkpoint = await replacement.load_checkpoint("g1")
        assert await replacement.load_checkpoint("never-ran") is None
    assert checkpoint is not None
    assert checkpoint.iteration == 2
    assert checkpoint.messages == [turn(0), turn(1), turn(2), turn(3)]
    assert checkpoint.todos == {"items": [{"text": "fix", "done": False}]}
    assert checkpoint.counters == {"iteration": 2, "input": 250, "output": 60, "tool_calls": 3}


async def test_each_checkpoint_writes_only_the_new_messages(kb: KnowledgeBase, dsn: str) -> None:
    for i in range(200):
        await kb.save_checkpoint("long", i + 1, [turn(i)], {}, {"iteration": i + 1})

    # Every message row still carries the transaction that appended it: 200 saves, 200
    # transactions, one row each; no save rewrote the history before it.
    per_transaction = rows(dsn, "SELECT xmin::text, count(*) FROM checkpoint_messages "
                                "WHERE goal_uid = 'long' GROUP BY 1")
    assert len(per_transaction) == 200
    assert {count for _, count in per_transaction} == {1}

    checkpoint = await kb.load_checkpoint("long")
    assert checkpoint is not None
    assert checkpoint.messages == [turn(i) for i in range(200)]
    assert checkpoint.iteration == 200


async def test_a_checkpoint_stores_its_messages_and_state_in_one_transaction(kb: KnowledgeBase, dsn: str) -> None:
    # The loop relies on it: a model's answer saved together with the results of its calls.
    await kb.save_checkpoint("atomic", 1, [turn(0)], {}, {"iteration": 1})
    for i in range(1, 4):
        await kb.save_checkpoint("atomic", i + 1, [turn(2 * i - 1), turn(2 * i)], {"n": i}, {"iteration": i + 1})
        (state_xmin,), = rows(dsn, "SELECT xmin::text FROM checkpoints WHERE goal_uid = 'atomic'")
        appended = rows(dsn, "SELECT xmin::text FROM checkpoint_messages WHERE goal_uid = 'atomic' AND seq >= %s",
                        2 * i - 1)
        assert appended == [(state_xmin,), (state_xmin,)]
    checkpoint = await kb.load_checkpoint("atomic")
    assert checkpoint is not None and checkpoint.messages == [turn(i) for i in range(7)]
    assert (checkpoint.iteration, checkpoint.todos) == (4, {"n": 3})


async def test_compaction_replaces_the_history_and_later_turns_append_to_it(kb: KnowledgeBase) -> None:
    await kb.save_checkpoint("g2", 5, [turn(i) for i in range(10)], {"items": []}, {"iteration": 5})
    summary = {"role": "user", "content": [{"type": "text", "text": "Summary of turns 0-8"}]}
    await kb.replace_messages("g2", [summary, turn(9)])
    await kb.save_checkpoint("g2", 6, [turn(10)], {"items": []}, {"iteration": 6})

    checkpoint = await kb.load_checkpoint("g2")
    assert checkpoint is not None
    assert checkpoint.messages == [summary, turn(9), turn(10)]
    assert checkpoint.iteration == 6


async def test_a_writer_that_never_read_the_checkpoint_is_asked_for_its_whole_conversation(
        kb: KnowledgeBase, dsn: str, tmp_path: Path) -> None:
    assert await kb.save_checkpoint("g12", 2, [turn(0), turn(1), turn(2)], {}, {"iteration": 2})
    # A pod that could not read that checkpoint in time and started the goal afresh.
    async with KnowledgeBase(dsn, namespace="team-a", spool=tmp_path / "fresh.spool") as fresh:
        mine = [turn(0), {"role": "assistant", "content": [{"type": "text", "text": "another answer"}]},
                turn(2), turn(3)]
        assert not await fresh.save_checkpoint("g12", 2, mine, {}, {"iteration": 2})
        assert rows(dsn, "SELECT count(*) FROM checkpoint_messages WHERE goal_uid = 'g12'") == [(3,)]
        await fresh.replace_messages("g12", mine)
        assert await fresh.save_checkpoint("g12", 2, [], {"n": 2}, {"iteration": 2})
        assert await fresh.save_checkpoint("g12", 3, [turn(4)], {"n": 3}, {"iteration": 3})
    checkpoint = await kb.load_checkpoint("g12")
    assert checkpoint is not None
    assert checkpoint.messages == [*mine, turn(4)]  # one conversation, not two mixed
    assert (checkpoint.iteration, checkpoint.todos) == (3, {"n": 3})


async def test_a_checkpoint_missing_what_its_writer_counted_gets_no_gap(kb: KnowledgeBase, dsn: str,
                                                                      tmp_path: Path) -> None:
    assert await kb.save_checkpoint("g13", 1, [turn(0), turn(1)], {}, {"iteration": 1})
    async with KnowledgeBase(dsn, namespace="team-a", spool=tmp_path / "other.spool") as other:  # a second writer ends it
        await other.drop_checkpoint("g13")
    assert not await kb.save_checkpoint("g13", 2, [turn(2), turn(3)], {}, {"iteration": 2})
    assert rows(dsn, "SELECT count(*) FROM checkpoint_messages WHERE goal_uid = 'g13'") == [(0,)]
    await kb.replace_messages("g13", [turn(i) for i in range(4)])
    assert await kb.save_checkpoint("g13", 2, [], {}, {"iteration": 2})
    checkpoint = await kb.load_checkpoint("g13")
    assert checkpoint is not None and checkpoint.messages == [turn(i) for i in range(4)]


async def test_a_dropped_checkpoint_is_gone(kb: KnowledgeBase, dsn: str) -> None:
    await kb.save_checkpoint("g3", 1, [turn(0)], {}, {"iteration": 1})
    await kb.drop_checkpoint("g3")
    assert await kb.load_checkpoint("g3") is None
    assert rows(dsn, "SELECT count(*) FROM checkpoint_messages WHERE goal_uid = 'g3'") == [(0,)]


async def test_tool_output_with_nul_characters_is_stored(kb: KnowledgeBase) -> None:
    message = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a\x00b"}]}
    await kb.save_checkpoint("g4", 1, [message], {}, {})
    checkpoint = await kb.load_checkpoint("g4")
    assert checkpoint is not None
    assert checkpoint.messages[0]["content"][0]["content"] == "a\ufffdb"


# ---- experiences, patterns and lessons -------------------------------------------------------


async def test_errors_differing_only_in_numbers_paths_and_ids_form_one_pattern(kb: KnowledgeBase, dsn: str) -> None:
    errors = ["TimeoutError: no answer after 30 s from /var/run/build-1234/out.sock (request 3f2a9c1e7b)",
              "TimeoutError: no answer after 45 s from /var/run/build-98/out.sock (request 0a9e44c21d)",
              "TimeoutError: no answer after 5 s from /tmp/x/out.sock (request 8c1f0e2d9a)"]
    for i, error in enumerate(errors):
        await kb.record_experience(experience("Fix the build cache", success=i == 2, tools=HELM, error=error,
                                              outcome="raised the timeout" if i == 2 else "gave up"))
    await kb.record_experience(experience("Fix the build cache", False, HELM, error="PermissionError: denied"))

    patterns = rows(dsn, "SELECT kind, key, success_count, failure_count FROM patterns ORDER BY kind, key")
    assert patterns == [
        ("error", "permissionerror: denied", 0, 1),
        ("error", "timeouterror: no answer after <n> s from <path> (request <hex>)", 1, 2),
        ("success", "bash", 1, 3),  # helm then kubectl: one tool, so one step
    ]
    assert rows(dsn, "SELECT count(*) FROM experiences") == [(4,)]


async def test_lessons_put_the_approach_that_worked_more_often_first(kb: KnowledgeBase) -> None:
    for i in range(5):
        await kb.record_experience(experience("Fix the failing parser tests", i != 3, PYTEST_FIRST,
                                              outcome="pytest -x found the failing case quickly"))
    for i in range(3):
        await kb.record_experience(experience("Fix the parser tests in CI", i == 0, READ_AROUND, outcome="patched"))
    for _ in range(3):
        await kb.record_experience(experience("Upgrade the helm chart of the gateway", True, HELM,
                                              outcome="rolled out"))

    lessons = await kb.lessons("The parser tests are failing again, please fix them", "coder")

    assert [lesson.kind for lesson in lessons] == ["success", "success"]
    best, worse = lessons
    assert (best.success_count, best.failure_count) == (4, 1)
    assert (worse.success_count, worse.failure_count) == (1, 2)
    assert best.score > worse.score
    assert "worked 4/5 times" in best.text and "pytest -x" in best.text
    assert "consider another approach" in worse.text
    assert not any("helm" in lesson.text for lesson in lessons)
    assert await kb.lessons("Rotate the TLS certificates of the ingress", "coder") == []


async def test_lesson_use_is_counted_with_its_outcome(kb: KnowledgeBase, dsn: str) -> None:
    await kb.record_experience(experience("Fix the parser tests", True, PYTEST_FIRST))
    await kb.record_experience(experience("Fix the parser tests", False, READ_AROUND,
                                          error="AssertionError in tests/test_parser.py"))
    ids = [lesson.id for lesson in await kb.lessons("fix the parser tests", "coder")]
    assert len(ids) == 3  # two approaches and one error

    await kb.record_lesson_use(ids, success=True, goal_uid="g5")
    await kb.record_lesson_use(ids[:1], success=False, goal_uid="g6")

    counts = dict((pid, (used, worked)) for pid, used, worked in rows(
        dsn, "SELECT id, usage_count, usage_success_count FROM patterns"))
    assert counts[ids[0]] == (2, 1)
    assert counts[ids[1]] == counts[ids[2]] == (1, 1)
    assert rows(dsn, "SELECT count(*) FROM lesson_usage") == [(4,)]


async def test_the_benchmarks_seeded_experiences_are_searchable(kb: KnowledgeBase, dsn: str) -> None:
    assert await seed_experiences(dsn, "team-a", 2000, batch=500) == 2000
    assert rows(dsn, "SELECT count(*), count(DISTINCT agent) FROM experiences") == [(2000, 1)]
    lessons = await kb.lessons("Fix the flaky tests in the payment parser", "bench")
    assert len(lessons) == 5
    assert lessons == sorted(lessons, key=lambda lesson: -lesson.score)


# ---- approvals -------------------------------------------------------------------------------


async def test_approval_decisions_are_audited_once_each(kb: KnowledgeBase) -> None:
    t1 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    t2 = datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc)
    await kb.record_decision("g7", "a-1", "tool", "bash: rm -rf build/", "approved", "alice@example.com", t1, "fine")
    await kb.record_decision("g7", "a-2", "self-modification", "add a lesson", "denied", "bob", t2, "too broad")
    await kb.record_decision("g7", "a-1", "tool", "bash: rm -rf build/", "denied", "mallory", t2, "late")
    with pytest.raises(ValueError, match="a-3"):
        await kb.record_decision("g7", "a-3", "tool", "x", "maybe", "bob", t2)

    decisions = await kb.decisions("g7")
    assert [(d.approval_id, d.decision, d.decided_by, d.decided_at) for d in decisions] == [
        ("a-1", "approved", "alice@example.com", t1), ("a-2", "denied", "bob", t2)]
    assert await kb.decisions("other-goal") == []


# ---- outages ---------------------------------------------------------------------------------


async def test_writes_during_an_outage_wait_and_arrive_in_order(kb: KnowledgeBase, dsn: str,
                                                              outage: PostgresServer) -> None:
    await kb.save_checkpoint("g8", 1, [turn(0), turn(1)], {}, {"iteration": 1})
    outage.stop()

    started = time.monotonic()
    for i in range(2, 40):
        await kb.save_checkpoint("g8", i, [turn(i)], {"done": i}, {"iteration": i})
    await kb.record_experience(experience("Fix the parser tests", True, PYTEST_FIRST))
    await kb.record_decision("g8", "a-1", "tool", "bash", "approved", "alice", datetime.now(timezone.utc))
    assert await kb.load_checkpoint("g8") is None
    assert await kb.lessons("fix the parser tests", "coder") == []
    assert await kb.decisions("g8") == []
    assert time.monotonic() - started < 3.0
    assert not kb.healthy
    assert kb.pending_writes == 3  # the checkpoints coalesced into one

    outage.start()
    assert await kb.flush(timeout=20)
    assert kb.healthy and kb.pending_writes == 0

    checkpoint = await kb.load_checkpoint("g8")
    assert checkpoint is not None
    assert checkpoint.messages == [turn(i) for i in range(40)]
    assert (checkpoint.iteration, checkpoint.todos) == (39, {"done": 39})
    assert [d.approval_id for d in await kb.decisions("g8")] == ["a-1"]
    assert rows(dsn, "SELECT count(*) FROM experiences") == [(1,)]


async def test_a_new_process_replays_what_a_crashed_one_spooled(dsn: str, tmp_path: Path,
                                                                outage: PostgresServer) -> None:
    spool = tmp_path / "knowledge.spool"
    first = KnowledgeBase(dsn, namespace="team-a", spool=spool, retry_delay=0.1)
    await first.open()
    await first.save_checkpoint("g9", 1, [turn(0)], {}, {"iteration": 1})
    outage.stop()
    await first.save_checkpoint("g9", 2, [turn(1), turn(2)], {}, {"iteration": 2})
    await first.save_checkpoint("g9", 3, [turn(3)], {}, {"iteration": 3})
    await first.record_experience(experience("Fix the parser tests", True, PYTEST_FIRST))
    await first.close()  # the process dies; only the spool remains
    assert [json.loads(line)["op"] for line in spool.read_text().splitlines()] == [
        "checkpoint", "checkpoint", "experience"]
    outage.start()

    second = KnowledgeBase(dsn, namespace="team-a", spool=spool, retry_delay=0.1)
    assert second.pending_writes == 2
    async with second:
        assert await second.flush(timeout=20)
        checkpoint = await second.load_checkpoint("g9")
    assert checkpoint is not None
    assert checkpoint.messages == [turn(i) for i in range(4)]
    assert checkpoint.iteration == 3
    assert rows(dsn, "SELECT count(*) FROM experiences") == [(1,)]
    assert not spool.exists()


async def test_replaying_writes_that_had_already_arrived_adds_nothing(dsn: str, tmp_path: Path,
                                                                      outage: PostgresServer) -> None:
    spool = tmp_path / "knowledge.spool"
    async with KnowledgeBase(dsn, namespace="team-a", spool=spool, retry_delay=0.1) as kb:
        await kb.save_checkpoint("g10", 1, [turn(0)], {}, {"iteration": 1})
        outage.stop()
        await kb.save_checkpoint("g10", 2, [turn(1), turn(2)], {}, {"iteration": 2})
        await kb.record_experience(experience("Fix the parser tests", True, PYTEST_FIRST))
        await kb.record_lesson_use([1], success=True)
        kept = tmp_path / "copy.spool"
        shutil.copy(spool, kept)
        outage.start()
        assert await kb.flush(timeout=20)

    # A process that died after its writes committed but before it cleared the spool.
    shutil.copy(kept, spool)
    async with KnowledgeBase(dsn, namespace="team-a", spool=spool, retry_delay=0.1) as again:
        assert await again.flush(timeout=20)
        checkpoint = await again.load_checkpoint("g10")
    assert checkpoint is not None
    assert checkpoint.messages == [turn(0), turn(1), turn(2)]
    assert rows(dsn, "SELECT count(*) FROM experiences") == [(1,)]
    assert rows(dsn, "SELECT usage_count FROM patterns WHERE id = 1") == [(1,)]


async def test_the_first_read_after_a_restart_finds_the_data(kb: KnowledgeBase, outage: PostgresServer) -> None:
    await kb.save_checkpoint("g11", 1, [turn(0)], {}, {"iteration": 1})
    outage.stop()
    outage.start()
    checkpoint = await kb.load_checkpoint("g11")
    assert checkpoint is not None and checkpoint.messages == [turn(0)]
    assert kb.healthy


# ---- PostgreSQL's disk full --------------------------------------------------------------------


REFUSE_FOR_DISK = """CREATE FUNCTION refuse_for_disk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = 'disk_full'; END $$;
CREATE TRIGGER full_disk BEFORE INSERT OR UPDATE ON checkpoint_messages FOR EACH ROW EXECUTE FUNCTION refuse_for_disk();
CREATE TRIGGER full_disk BEFORE INSERT ON experiences FOR EACH ROW EXECUTE FUNCTION refuse_for_disk()"""


async def test_writes_refused_for_a_full_disk_are_reported_until_they_are_stored(kb: KnowledgeBase, dsn: str) -> None:
    told: list[Any] = []
    kb.on_backlog = told.append
    await kb.save_checkpoint("g12", 1, [turn(0)], {}, {"iteration": 1})
    assert told == []  # stored at once: nothing to say
    with psycopg.connect(dsn, autocommit=True) as owner:  # PostgreSQL answers disk_full (SQLSTATE 53100)
        owner.execute(REFUSE_FOR_DISK)

    await kb.save_checkpoint("g12", 2, [turn(1), turn(2)], {}, {"iteration": 2})
    await kb.record_experience(experience("Fix the parser tests", True, PYTEST_FIRST))
    backlog = told[-1]
    assert (backlog.reason, backlog.queued, backlog.waiting) == ("DiskFull", 2, "1 checkpoint, 1 experience")
    status = backlog.to_status()
    assert status["reason"] == "DiskFull" and status["queuedWrites"] == 2 and status["since"]
    assert "disk is full" in status["message"] and "No space left on device" in status["message"]
    assert "free space" in status["message"] and len(status["message"]) <= 1024
    assert await kb.load_checkpoint("g12") is None  # reads wait behind the queued writes, so they say nothing
    assert [b.reason for b in told] == ["DiskFull", "DiskFull"]  # the count changed, not the reason

    with psycopg.connect(dsn, autocommit=True) as owner:  # space freed
        owner.execute("DROP FUNCTION refuse_for_disk() CASCADE")
    assert await kb.flush(timeout=20)
    assert told[-1] is None and kb.backlog is None
    checkpoint = await kb.load_checkpoint("g12")
    assert checkpoint is not None and checkpoint.messages == [turn(0), turn(1), turn(2)]
    assert rows(dsn, "SELECT count(*) FROM experiences") == [(1,)]


async def test_writes_queued_in_an_outage_are_reported_as_unavailable(kb: KnowledgeBase, outage: PostgresServer) -> None:
    told: list[Any] = []
    kb.on_backlog = told.append
    outage.stop()
    await kb.save_checkpoint("g13", 1, [turn(0)], {}, {"iteration": 1})
    assert told[-1].reason == "Unavailable" and told[-1].queued == 1
    assert "disk" not in told[-1].message
    outage.start()
    assert await kb.flush(timeout=20)
    assert told[-1] is None
