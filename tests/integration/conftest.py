"""Session-wide PostgreSQL and Redis servers (real ones, started by the test run)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import PostgresServer, RedisServer


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server; `.dsn` to connect, `.stop()` / `.start()` for outages."""
    base = Path(tempfile.mkdtemp(prefix="overseer-pg-"))  # outside pytest's root-only tmp tree
    server = PostgresServer(base).init()
    yield server
    try:
        server.stop()
    except RuntimeError:  # already stopped by a test
        pass
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server; `.url` to connect, `.stop()` / `.start()` for outages."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
