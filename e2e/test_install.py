"""What the images hold, tested where no container engine runs: operator/install-wheel.sh (the one
script both Dockerfiles install with) into a clean folder, then both commands from that install
only: `--help`, the operator against the local API server until it is ready, and the agent
working a Goal to Succeeded with a token of its pod's ServiceAccount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import REPO, wait_for
from e2e.world import World
from overseer.operator.workspace import claim_name

INSTALL = REPO / "operator" / "install-wheel.sh"


def clean_env() -> dict[str, str]:
    # Nothing of this venv may leak into the install: no PYTHONPATH, no VIRTUAL_ENV.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("install") / "overseer"
    result = subprocess.run([str(INSTALL), str(dest), sys.executable], env=clean_env(), capture_output=True,
                            text=True, timeout=900, cwd="/")
    assert result.returncode == 0, f"install-wheel.sh failed:\n{result.stdout}\n{result.stderr}"
    return dest


@pytest.fixture
def operator_executable(installed: Path) -> Path:
    return installed / "bin" / "overseer-operator"


@pytest.fixture
def agent_executable(installed: Path) -> Path:
    return installed / "bin" / "overseer-agent"


def run(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(installed / "bin" / args[0]), *args[1:]], env=clean_env(), capture_output=True,
                          text=True, timeout=120, cwd="/")


def test_the_install_holds_no_installer_and_the_project_from_the_wheel(installed: Path) -> None:
    assert not list((installed / "bin").glob("pip*"))
    probe = run(installed, "python", "-c", "import importlib.util as u, overseer; "
                "print(overseer.__file__); print(u.find_spec('pip'), u.find_spec('setuptools'))")
    where, installers = probe.stdout.splitlines()
    assert Path(where).is_relative_to(installed), f"overseer imported from {where}, not from the install"
    assert installers == "None None"


def test_every_module_of_the_install_is_compiled_ahead(installed: Path) -> None:
    # A read-only root filesystem cannot take a __pycache__ write at run time.
    probe = run(installed, "python", "-c", "import importlib.util as u, pathlib, sys, sysconfig\n"
                "site = pathlib.Path(sysconfig.get_paths()['purelib'])\n"
                "print(sum(1 for p in site.rglob('*.py') if not pathlib.Path(u.cache_from_source(p)).exists()))\n"
                "print(sum(1 for p in site.rglob('*.py')))")
    missing, total = map(int, probe.stdout.split())
    assert total > 1000 and missing == 0, f"{missing} of {total} modules have no bytecode"


@pytest.mark.parametrize("command", ["overseer-operator", "overseer-agent"])
def test_both_entrypoints_answer_help(installed: Path, command: str) -> None:
    result = run(installed, command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {command}")


def test_operator_and_agent_from_the_install_work_a_goal(world: World, agents: Any, installed: Path) -> None:
    # The `world` operator runs from the install: ready means every cache filled.
    assert Path(world.op.executable).is_relative_to(installed)
    wait_for(lambda: world.op.probe("/readyz") == (200, "ok"), description="the installed operator's /readyz")
    model, runner = agents({"hello": [
        {"reply": [{"tool_use": {"name": "bash", "input": {"command": "git --version && echo done > out.txt"}}}]},
        {"reply": [{"text": "Wrote out.txt."}]},
    ]}, workspace="{size: 1Gi}")
    world.goal("hello", extra="  maxRetries: 0")
    goal = world.wait_phase("hello", "Succeeded", timeout=90)
    assert "Wrote out.txt." in goal["status"]["result"]
    [process] = runner.processes.values()
    assert process.proc.args[0] == str(installed / "bin" / "overseer-agent")
    assert (runner.claim_folder(claim_name("hello")) / "out.txt").read_text() == "done\n"
