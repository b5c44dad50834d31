"""The workspace as an attempt finds it: seeded once from a dependency's files (spec.workspaceFrom),
and whether an earlier attempt's files can be there at all (a claim keeps them, an emptyDir not)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_DIR = ".overseer"


@dataclass(frozen=True)
class Start:
    task_note: str | None     # added to the task on a first start
    resume_note: str | None   # told to the model when an attempt resumes a checkpoint


def prepare(workspace: Path, goal_uid: str, volume: str | None, source: Path | None, mode: str | None,
            source_goal: str = "") -> Start:
    """Seed the workspace from source (mode Copy) unless an earlier attempt did, and say what the
    model should know. A marker per goal tells a workspace an earlier attempt used from a new one."""
    marker = workspace / STATE_DIR / f"workspace-{goal_uid}.json"
    seen = json.loads(marker.read_text()) if marker.exists() else None
    task_note = resume_note = None
    if source is not None and mode == "Copy":
        if not (seen or {}).get("seeded"):
            # Files first, marker last: a pod lost mid-copy copies again.
            shutil.copytree(source, workspace, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(STATE_DIR))
            logger.info("copied the workspace of goal %s from %s", source_goal, source)
        task_note = f"The files goal {source_goal} left in its workspace were copied into your workspace."
    elif source is not None:
        task_note = (f"The files goal {source_goal} left in its workspace are at {source}, read-only; "
                     f"read them there and write into your own workspace.")
    if seen is None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"seeded": source is not None and mode == "Copy"}))
        if volume != "claim":
            resume_note = ("Note from the agent runtime: this attempt runs in a new pod whose workspace is "
                           "empty (an emptyDir: the Agent has no spec.workspace claim). Files written by earlier "
                           "attempts are gone; check what is there before relying on earlier results.")
        else:
            resume_note = ("Note from the agent runtime: the workspace claim holds no trace of earlier attempts, "
                           "so their files may be gone; check what is there before relying on earlier results.")
    return Start(task_note, resume_note)
