"""A YAML file mounted from a ConfigMap, read again when it changes (the kubelet updates such a
mount in place, so a reader checks its modification time rather than reading it once)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class MountedYaml:
    def __init__(self, path: str | Path | None, error: type[Exception]) -> None:
        self.path = Path(path) if path else None
        self._error = error
        self._stamp: float | None = None

    def changed(self) -> Any | None:
        """The file's content if it changed since the last call, else None (also without a file).
        A file that is not YAML raises `error`, and is not read again until it changes."""
        if self.path is None:
            return None
        stamp = os.stat(self.path).st_mtime
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as e:
            raise self._error(f"{self.path}: not YAML: {e}") from e
