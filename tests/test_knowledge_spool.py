"""The knowledge base's write queue while PostgreSQL is away: what waits, merged how, and the
spool file a new process replays (the replay itself: tests/integration/test_knowledge.py)."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from overseer.agent.knowledge.spool import Spool, Write, enqueue


def checkpoint(goal: str, *messages: str, iteration: int | None = None, replace: bool = False) -> Write:
    state = None if iteration is None else {"iteration": iteration, "todos": {}, "counters": {}}
    return Write("checkpoint", {"goal_uid": goal, "base": None if replace else 0, "replace": replace,
                                "messages": list(messages), "state": state, "namespace": "team-a"})


def queued(queue: deque[Write]) -> list[tuple[str, Any]]:
    return [(w.op, w.args.get("messages", w.args.get("goal_uid"))) for w in queue]


def test_checkpoints_of_one_goal_wait_as_one_write_with_every_message_and_the_last_state() -> None:
    queue: deque[Write] = deque()
    first, second = checkpoint("g1", "m0", "m1", iteration=1), checkpoint("g1", "m2", iteration=2)
    enqueue(queue, first)
    enqueue(queue, checkpoint("g2", "x0", iteration=1))
    enqueue(queue, second)

    assert queued(queue) == [("checkpoint", ["m0", "m1", "m2"]), ("checkpoint", ["x0"])]
    assert queue[0].args["state"]["iteration"] == 2
    assert queue[0].id == second.id  # a replay of the merged write is recognised as the last one


def test_a_compaction_replaces_the_messages_waiting_and_keeps_the_state() -> None:
    queue: deque[Write] = deque()
    enqueue(queue, checkpoint("g1", "m0", "m1", iteration=3))
    enqueue(queue, checkpoint("g1", "summary", replace=True))

    assert queued(queue) == [("checkpoint", ["summary"])]
    assert queue[0].args["replace"] and queue[0].args["base"] is None
    assert queue[0].args["state"]["iteration"] == 3


def test_a_dropped_checkpoint_takes_only_its_goals_waiting_writes_with_it() -> None:
    queue: deque[Write] = deque()
    enqueue(queue, checkpoint("g1", "m0", iteration=1))
    enqueue(queue, Write("experience", {"goal_uid": "g1", "namespace": "team-a"}))
    enqueue(queue, checkpoint("g2", "x0", iteration=1))
    enqueue(queue, Write("drop_checkpoint", {"goal_uid": "g1", "namespace": "team-a"}))

    assert queued(queue) == [("experience", "g1"), ("checkpoint", ["x0"]), ("drop_checkpoint", "g1")]


def test_a_new_process_reads_the_spool_back_in_order_past_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "kb" / "knowledge.spool")
    writes = [checkpoint("g1", "m0", iteration=1), Write("decision", {"goal_uid": "g1"})]
    for write in writes:
        spool.append(write)
    with (tmp_path / "kb" / "knowledge.spool").open("a") as f:
        f.write('{"op": "checkpoint", "args": {"goal_u')  # the process died mid-write

    loaded = Spool(tmp_path / "kb" / "knowledge.spool").load("team-a", {"checkpoint", "decision"})

    assert [(w.op, w.id, w.args) for w in loaded] == [
        ("checkpoint", writes[0].id, writes[0].args), ("decision", writes[1].id, {"goal_uid": "g1", "namespace": "team-a"})]


def test_a_spool_holds_only_what_still_waits_and_is_gone_once_nothing_does(tmp_path: Path) -> None:
    path = tmp_path / "knowledge.spool"
    spool = Spool(path)
    writes = [checkpoint("g1", "m0", iteration=1), checkpoint("g2", "x0", iteration=1)]
    for write in writes:
        spool.append(write)

    spool.rewrite(writes[1:])
    assert [w.id for w in spool.load("team-a", {"checkpoint"})] == [writes[1].id]
    spool.rewrite([])
    assert not path.exists()
