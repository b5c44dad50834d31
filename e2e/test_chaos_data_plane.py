"""The data-plane rows of the fault table (e2e/chaos/data_plane.py), in their reduced form: each
scenario breaks one part while real goals run, and nothing may be lost or done twice."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.chaos.context import Context
from e2e.chaos.data_plane import SCENARIOS
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


def test_a_postgresql_outage_loses_no_knowledge_base_row(ctx: Context) -> None:
    row = SCENARIOS["postgres-outage"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row


def test_goals_go_on_without_redis_and_their_event_stream_resumes(ctx: Context) -> None:
    row = SCENARIOS["redis-outage"](ctx, False)
    print(markdown([row]))
    assert row.ok and row.finished == row.goals_in, row
    assert "during the outage 3/3" in row.notes, row.notes


def test_a_full_workspace_disk_fails_with_a_reason_and_leaves_a_readable_checkpoint(ctx: Context) -> None:
    row = SCENARIOS["disk-full"](ctx, False)
    print(markdown([row]))
    assert row.ok and (row.finished, row.reasons) == (1, {"WorkspaceFull": 1}), row
    # the reason names the workspace and the space left, not only an exit code
    assert "fills-checkpoint: attempt 1: the workspace " in row.notes and "bytes free of" in row.notes, row.notes
