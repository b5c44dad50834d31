"""What Argo CD and kstatus make of Overseer's objects: e2e/tools/health (gopher-lua running
manifests/argocd/argocd-cm.yaml's checks as Argo CD does, and cli-utils' kstatus), built once
into the cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from e2e.harness import REPO, cache_dir

TOOL_DIR = REPO / "e2e" / "tools" / "health"
ARGOCD_DIR = REPO / "manifests" / "argocd"
ARGOCD_CM = ARGOCD_DIR / "argocd-cm.yaml"


def tool() -> Path:
    """The overseer-health binary, built first if its sources changed."""
    build = subprocess.run([str(TOOL_DIR / "build.sh")], capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"e2e/tools/health/build.sh failed:\n{build.stdout}{build.stderr}")
    return cache_dir() / "tools" / "bin" / "overseer-health"


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool()), *args], input=input, capture_output=True, text=True, timeout=60)


def verdicts(objects_json: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> {"argocd": {status, message}, "kstatus": {status, message}} for the
    objects in a `kubectl get -o json` answer."""
    proc = run("check", str(ARGOCD_CM), input=objects_json)
    if proc.returncode != 0:
        raise AssertionError(f"overseer-health check failed: {proc.stderr}")
    return {(v["kind"], v["name"]): v for v in json.loads(proc.stdout)}
