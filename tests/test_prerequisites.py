"""`make test` stops at once, naming what is missing and how to install it, on a machine
without PostgreSQL or Redis (instead of running the suite and failing in its middle)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "tests" / "prerequisites.sh"


def check(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CHECK)], env={**os.environ, "PATH": path, **env},
                          capture_output=True, text=True, timeout=30)


def test_a_machine_with_everything_passes_silently():
    result = check(os.environ["PATH"])

    assert (result.returncode, result.stderr) == (0, "")


def test_missing_redis_is_named_with_the_install_command(path_without):
    result = check(path_without("redis-server"))

    assert result.returncode == 1
    assert "Redis (redis-server)" in result.stderr
    assert "apt-get install -y redis-server" in result.stderr
    assert "PostgreSQL" not in result.stderr


def test_missing_postgresql_and_redis_give_one_install_command(path_without):
    result = check(path_without("redis-server", "initdb", "pg_ctl"), POSTGRESQL_BIN_DIRS="/nonexistent")

    assert result.returncode == 1
    assert "PostgreSQL (initdb, pg_ctl)" in result.stderr and "Redis (redis-server)" in result.stderr
    assert "apt-get install -y postgresql redis-server" in result.stderr


def test_make_test_stops_before_installing_or_building_anything(path_without, tmp_path):
    # PYTHON=false: were the check to let this through, creating the venv would fail at once
    # rather than run the suite from inside the suite.
    result = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "test", "PYTHON=false",
                             "VENV=" + str(tmp_path / "venv")],
                            env={**os.environ, "PATH": path_without("redis-server")},
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "apt-get install -y redis-server" in result.stderr
    assert "venv" not in result.stdout, "the venv recipe ran: the check did not stop make"
