"""The wheel installs a working `overseer` package and its commands into a clean environment."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = ["overseer", "overseer.api", "overseer.operator", "overseer.operator.handlers", "overseer.gateway.main", "overseer.agent",
           "overseer.agent.main", "overseer.agent.tools.shell", "overseer.contract", "overseer.live", "overseer.cli",
           "overseer.testing.scripted_model"]
COMMANDS = ["overseer-operator", "overseer-crds", "overseer-gateway", "overseer-agent", "overseer-scripted-model", "kubectl-overseer"]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH: nothing but the installed wheel may provide `overseer`.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources, so the build leaves nothing in the work tree."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for folder in ("operator", "agent_image"):
        shutil.copytree(REPO / folder, src / folder, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    run(sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist", src, cwd=root)
    [built] = (root / "dist").glob("overseer-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Path:
    """A fresh virtual environment holding the wheel and nothing else of the project."""
    env_dir = wheel.parent.parent / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir, cwd=wheel.parent)
    python = env_dir / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=wheel.parent)
    # The dependencies live wherever the tests run from; a .pth line puts that directory on the
    # path without running its own .pth files (which would bring back an editable install).
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       cwd=wheel.parent).stdout.strip())
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def test_wheel_holds_only_the_overseer_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}

    assert {t for t in top if not t.endswith(".dist-info")} == {"overseer"}


def test_wheel_declares_the_commands(wheel):
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("entry_points.txt"))

    assert "overseer-operator = overseer.operator.main:main" in entry_points
    assert "overseer-crds = overseer.api.crd:main" in entry_points
    assert "overseer-scripted-model = overseer.testing.scripted_model:main" in entry_points
    assert "overseer-gateway = overseer.gateway.main:main" in entry_points


def test_installed_packages_import_from_the_wheel(venv, tmp_path):
    probe = (
        "import importlib, json\n"
        f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {MODULES!r}}}))\n"
    )

    files = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout)

    for module, file in files.items():
        assert Path(file).resolve().is_relative_to(venv.resolve()), f"{module} imported from {file}"


def test_import_operator_is_still_the_standard_library(venv, tmp_path):
    # The source folder is named operator/; installed, it must not shadow the stdlib module.
    probe = "import overseer.operator, operator; print(operator.__file__); print(operator.itemgetter)"

    out = run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout.splitlines()

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out[0]).resolve().parent == stdlib
    assert "itemgetter" in out[1]


def test_console_scripts_are_installed(venv, tmp_path):
    for command in COMMANDS:
        assert (venv / "bin" / command).is_file(), command


def test_overseer_operator_command_runs(venv, tmp_path):
    out = run(venv / "bin" / "overseer-operator", "--help", cwd=tmp_path).stdout

    assert "usage: overseer-operator" in out


def test_overseer_gateway_command_runs(venv, tmp_path):
    out = run(venv / "bin" / "overseer-gateway", "--help", cwd=tmp_path).stdout

    assert "usage: overseer-gateway" in out


def test_overseer_crds_command_prints_the_three_crds(venv, tmp_path):
    out = run(venv / "bin" / "overseer-crds", cwd=tmp_path).stdout

    assert out.count("kind: CustomResourceDefinition") == 3
    for plural in ("agents", "goals", "capabilities"):
        assert f"name: {plural}.overseer.dev" in out


def test_overseer_scripted_model_command_runs(venv, tmp_path):
    out = run(venv / "bin" / "overseer-scripted-model", "--help", cwd=tmp_path).stdout

    assert "usage: overseer-scripted-model" in out
