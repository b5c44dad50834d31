"""The data-plane rows of the fault table (e2e/chaos/data_plane.py), in their reduced form: each
scenario breaks one part while real goals run, and nothing may be lost or done twice."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.chaos.context import Context
from e2e.chaos.data_plane import GOAL_BUDGET, SCENARIOS
from e2e.chaos.table import markdown
from e2e.harness import Cluster


@pytest.fixture
def ctx(cluster: Cluster, crds: list[str], admission_policies: list[str]) -> Iterator[Context]:
    # Not tmp_path: PostgreSQL runs as its own user and must pass through the folders above its
    # data (0711: passed through, not listed), which pytest keeps private.
    workdir = Path(tempfile.mkdtemp(prefix="overseer-chaos-"))
    workdir.chmod(0o711)
    context = Context(cluster, workdir)
    yield context
    context.close()
    shutil.rmtree(workdir, ignore_errors=True)


def test_an_agent_killed_in_tool_calls_and_checkpoint_writes_resumes_without_repeating_a_call(ctx: Context) -> None:
    row = SCENARIOS["agent-kills"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == 1, row
    assert "finished calls repeated 0, missing 0" in row.notes and "unreadable checkpoints 0" in row.notes, row.notes
    assert "in a tool call" in row.notes, row.notes


def test_model_errors_slow_answers_and_cut_streams_are_retried_once_each_and_goals_finish(ctx: Context) -> None:
    row = SCENARIOS["model-faults"](ctx, False)
    print(markdown([row]))
    assert row.ok and (row.goals_in, row.finished, row.reasons) == (6, 5, {"RetriesExhausted": 1}), row
    # one retry layer: 8 calls for the outage, one per scripted turn elsewhere; no crash loop
    assert "off by" not in row.notes and "pods restarted 0" in row.notes, row.notes
    assert "outage: attempt 1 failed (ModelUnavailable: the model API failed 8 times in a row" in row.notes, row.notes


def test_a_postgresql_outage_loses_no_knowledge_base_row_and_no_spend_row(ctx: Context) -> None:
    row = SCENARIOS["postgres-outage"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row
    # the gateway's rows of the calls answered meanwhile waited in its memory, and were written once
    during = re.search(r"(\d+) model calls answered while PostgreSQL was down", row.notes)
    assert during and int(during[1]) > 0 and "(doubled 0;" in row.notes, row.notes


def test_goals_go_on_without_redis_and_their_event_stream_resumes(ctx: Context) -> None:
    row = SCENARIOS["redis-outage"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row
    assert "during the outage 3/3" in row.notes, row.notes
    carried = re.search(r"the goal's end after Redis returned (\d+)/(\d+)", row.notes)
    assert carried and int(carried[2]) >= 1 and carried[1] == carried[2], row.notes


def test_a_full_workspace_disk_fails_with_a_reason_and_leaves_a_readable_checkpoint(ctx: Context) -> None:
    row = SCENARIOS["disk-full"](ctx, False)
    print(markdown([row]))
    assert row.ok and (row.finished, row.reasons) == (1, {"WorkspaceFull": 1}), row
    # the reason names the workspace and the space left, not only an exit code
    assert "fills-checkpoint: attempt 1: the workspace " in row.notes and "bytes free of" in row.notes, row.notes


def test_goals_finish_when_a_gateway_replica_is_killed_and_every_answered_call_has_one_spend_row(
        ctx: Context) -> None:
    row = SCENARIOS["gateway-kill"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row
    cut = re.search(r"calls cut by the kills (\d+)", row.notes)
    assert cut and int(cut[1]) >= 2, row.notes  # the kill caught calls in flight...
    # ...asked again on the other replica, and each call an agent got is in the ledger once
    assert "(missing 0, doubled 0)" in row.notes and f"over their ${GOAL_BUDGET} budget 0" in row.notes, row.notes
    assert "tracebacks in the surviving gateway 0" in row.notes, row.notes


def test_postgresql_out_of_disk_refuses_writes_and_once_space_is_freed_every_queued_row_is_written(
        ctx: Context) -> None:
    row = SCENARIOS["postgres-disk-full"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row
    during = re.search(r"(\d+) model calls answered while the disk was full", row.notes)
    assert during and int(during[1]) > 0 and "amcheck: indexes whole" in row.notes, row.notes
    # shown where a person looks, not only in logs: the Agent's condition, each goal's status, Events from
    # the agents (their writes) and the gateway (its spend rows); all cleared once space is freed
    assert "Agent KnowledgeBase=False DiskFull after" in row.notes, row.notes
    assert "(names the writes and the fix)" in row.notes and "knowledgeBacklog DiskFull after" in row.notes, row.notes
    assert re.search(r"Events KnowledgeBaseDiskFull on [1-9]", row.notes), row.notes
    assert re.search(r"SpendLedgerDiskFull on [1-9]", row.notes) and "DiskFull on the Agent 1" in row.notes, row.notes
    assert "Agent KnowledgeBase=True and no goal's knowledgeBacklog after" in row.notes, row.notes
    assert re.search(r"KnowledgeBaseWritesStored on [1-9]", row.notes), row.notes
    assert re.search(r"SpendLedgerWritten on [1-9]", row.notes) and "KnowledgeBaseReady on the Agent 1" in row.notes, row.notes
