"""The workspace checkpoint store when its disk is full or a save was cut off: the last checkpoint
written stays readable and whole. A full disk is /dev/full (every write to it fails with ENOSPC)
linked where the store writes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from overseer.agent.checkpoint import WorkspaceFull
from overseer.agent.checkpoint_file import FileCheckpoints

TODOS: dict[str, object] = {"items": []}


def message(n: int) -> dict[str, object]:
    return {"role": "user" if n % 2 == 0 else "assistant", "content": [{"type": "text", "text": f"message {n}"}]}


def save(store: FileCheckpoints, iteration: int, messages: list[dict[str, object]]) -> bool:
    return asyncio.run(store.save(iteration, messages, TODOS, {"iteration": iteration}))


@pytest.mark.parametrize("full", ["state.tmp", "messages.jsonl"])
def test_a_save_that_finds_no_space_keeps_the_last_checkpoint_and_names_the_workspace(
        tmp_path: Path, full: str) -> None:
    store = FileCheckpoints(tmp_path, "uid-1")
    save(store, 1, [message(0), message(1)])
    before = store.messages_path.read_bytes(), store.state_path.read_bytes()
    if full == "messages.jsonl":  # the append itself fails: the file is /dev/full from here on
        os.rename(store.messages_path, tmp_path / "kept.jsonl")
    os.symlink("/dev/full", store.dir / full)

    with pytest.raises(WorkspaceFull) as failed:
        save(store, 2, [message(2), message(3)])

    assert str(failed.value).startswith(f"the workspace {tmp_path} is full (")
    assert "bytes free of" in str(failed.value) and "checkpoint of iteration 2 could not be written" in str(failed.value)
    assert "spec.workspace.size" in str(failed.value)
    if full == "messages.jsonl":
        os.replace(tmp_path / "kept.jsonl", store.messages_path)
    assert not (store.dir / "state.tmp").exists()
    assert (store.messages_path.read_bytes(), store.state_path.read_bytes()) == before
    loaded = asyncio.run(FileCheckpoints(tmp_path, "uid-1").load())
    assert loaded is not None and loaded.messages == [message(0), message(1)] and loaded.iteration == 1


def test_a_line_cut_mid_append_is_not_read_and_the_next_save_writes_over_it(tmp_path: Path) -> None:
    store = FileCheckpoints(tmp_path, "uid-1")
    save(store, 1, [message(0), message(1)])
    with open(store.messages_path, "a") as f:  # the pod died half way through the next append
        f.write('{"role": "user", "content": [{"type": "te')

    resumed = FileCheckpoints(tmp_path, "uid-1")
    loaded = asyncio.run(resumed.load())
    assert loaded is not None and loaded.messages == [message(0), message(1)]
    save(resumed, 2, [message(2)])
    again = asyncio.run(FileCheckpoints(tmp_path, "uid-1").load())
    assert again is not None and again.messages == [message(0), message(1), message(2)]
