"""Spend rows the ledger's PostgreSQL refuses for a full disk: each Goal whose rows wait is told so
in an Event naming the error and the fix, and again once the rows are in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from overseer.gateway.ledger import SCHEMA, Ledger, Spend
from overseer.gateway.ledger_events import LedgerEvents
from tests.support.servers import PostgresServer


@pytest.fixture
def dsn(postgres: PostgresServer) -> Iterator[str]:
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Events:
    """What LedgerEvents uses of Kube: Events, recorded."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    async def create(self, url_path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert url_path == f"/api/v1/namespaces/{body['metadata']['namespace']}/events"
        self.posted.append(body)
        return body


def spend(goal: str) -> Spend:
    return Spend(uuid.uuid4().hex, "team-a", "coder", goal, f"uid-{goal}", "pod", "claude-sonnet-5-5",
                 10, 20, 0, 0, 0, Decimal("0.001"))


async def until(check: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_goals_whose_spend_rows_wait_for_a_full_disk_get_an_event_and_another_once_they_are_in(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(SCHEMA)
        owner.execute("""CREATE FUNCTION refuse_for_disk() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device'
                USING ERRCODE = 'disk_full'; END $$;
            CREATE TRIGGER full_disk BEFORE INSERT ON gateway_spend FOR EACH ROW EXECUTE FUNCTION refuse_for_disk()""")
    ledger = Ledger(dsn)
    await ledger.open()
    kube = Events()
    events = LedgerEvents(kube, ledger)  # type: ignore[arg-type]
    try:
        for goal in ("work-0", "work-0", "work-1"):
            ledger.record(spend(goal))
        await until(lambda: ledger.refused is not None)
        await events.check()
        await events.check()  # told once per goal
        assert sorted((e["involvedObject"]["name"], e["involvedObject"]["uid"], e["type"], e["reason"])
                      for e in kube.posted) == [("work-0", "uid-work-0", "Warning", "SpendLedgerDiskFull"),
                                                ("work-1", "uid-work-1", "Warning", "SpendLedgerDiskFull")]
        work0 = next(e["message"] for e in kube.posted if e["involvedObject"]["name"] == "work-0")
        assert "disk is full" in work0 and "No space left on device" in work0 and "2 rows" in work0
        assert "free space" in work0

        with psycopg.connect(dsn, autocommit=True) as owner:
            owner.execute("DROP FUNCTION refuse_for_disk() CASCADE")
        assert await ledger.flush(timeout=20)
        await events.check()
        assert sorted((e["involvedObject"]["name"], e["reason"]) for e in kube.posted[2:]) == [
            ("work-0", "SpendLedgerWritten"), ("work-1", "SpendLedgerWritten")]
        await events.check()
        assert len(kube.posted) == 4
    finally:
        await ledger.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM gateway_spend").fetchone() == (3,)
