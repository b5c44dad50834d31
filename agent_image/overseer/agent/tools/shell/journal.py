"""A finished command's outcome, kept in the workspace under its tool call's id, so a replaced pod
that resumes at that call gets the outcome instead of running the command a second time.

The agent checkpoints a call's result only once the answer is back with it; an agent killed in
between (mid-call, or mid-checkpoint) would run the call again on resume, and a command that had
finished would then take effect twice. So whoever runs the command (the tools container, or the
agent without one) records the outcome the moment the command exits, whether or not the agent
that asked is still there to read it, and holds a lock on the record while the command runs: a
new pod asking for the same call waits for the old pod's run to end, then reads its record.
A command cut off by its container's death leaves no record and runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from .runner import ProcessOutcome

FOLDER = Path(".overseer") / "calls"
"""Under the workspace, one folder per goal uid, one record per tool call id."""
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def record_path(workspace: Path, goal_uid: str, call_id: str) -> Path | None:
    """Where the outcome of call `call_id` is recorded (None for ids that are not plain names)."""
    if not (_SAFE_ID.match(goal_uid) and _SAFE_ID.match(call_id)):
        return None
    return workspace / FOLDER / goal_uid / f"{call_id}.json"


def forget(workspace: Path, goal_uid: str) -> None:
    """Drop the goal's records once it has ended for good: no pod will resume it, and on a claim
    that outlives the goal (or is copied into a dependent's) they would only fill the disk."""
    if _SAFE_ID.match(goal_uid):
        shutil.rmtree(workspace / FOLDER / goal_uid, ignore_errors=True)


def within(record: Path, workspace: Path) -> bool:
    """Whether record is a record path under workspace (what the tools container accepts)."""
    try:
        relative = record.resolve(strict=False).relative_to(workspace.resolve() / FOLDER)
    except ValueError:
        return False
    return len(relative.parts) == 2 and record.suffix == ".json"


async def once(record: Path | None, run: Callable[[], Awaitable[ProcessOutcome]]) -> ProcessOutcome:
    """run(), unless record holds the outcome of an earlier run (returned with replayed=True);
    the outcome of this run is recorded before it is returned."""
    if record is None:
        return await run()
    record.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(record.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        # A thread, not the event loop, waits for a lock another process holds.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            return dataclasses.replace(ProcessOutcome(**json.loads(await asyncio.to_thread(record.read_text))),
                                       replayed=True)
        outcome = await run()
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(outcome)))
        os.replace(tmp, record)
        return outcome
    finally:
        os.close(fd)  # and with it the lock
