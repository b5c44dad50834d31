"""Real PostgreSQL and Redis servers for integration tests, on loopback, in throwaway folders.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
Each server can be stopped and started again on the same port and data (outage tests).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return path


class PostgresServer:
    def __init__(self, base: Path) -> None:
        # pytest's tmp folders are private to root; the postgres user must reach this one.
        base.chmod(0o755)
        self.dir = base / "pgdata"
        self.socket_dir = base / "pgsock"
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dsn = f"postgresql://overseer@127.0.0.1:{self.port}/overseer"

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self.as_postgres, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    def init(self) -> "PostgresServer":
        for d in (self.dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            if self.as_postgres:
                shutil.chown(d, "postgres", "postgres")
        self._run(pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "overseer", "--no-sync")
        # The superuser the tests use gets in freely; every other login (a namespace's knowledge-base
        # login) needs its password, as in a real installation.
        (self.dir / "pg_hba.conf").write_text(
            "local all overseer trust\nhost all overseer 127.0.0.1/32 trust\n"
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self._run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "overseer", "overseer")
        return self

    def start(self) -> None:
        opts = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off")
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-l", str(self.dir / "server.log"),
                  "-w", "start")
        wait_port(self.port)

    def stop(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")


class RedisServer:
    def __init__(self, base: Path) -> None:
        self.dir = base / "redis"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "RedisServer":
        self.dir.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: install Redis (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
