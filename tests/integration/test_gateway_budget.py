"""Cost and budgets through the gateway, with a real PostgreSQL ledger, the real SDK and the
scripted model: cache-aware prices, one ledger row per call, refusals that name the budget,
concurrent calls against one budget, and PostgreSQL outages."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anthropic
import psycopg
import pytest
import redis
from aiohttp import web

from overseer.agent.gateway_token import exhausted_budget
from overseer.testing.scripted_model import ScriptedModelServer
from overseer.api.gateway import BUDGET_HEADER
from overseer.gateway.app import add_routes
from overseer.gateway.budget import Meter
from overseer.gateway.counters import RedisCounters, Refused
from overseer.gateway.identity import Caller
from overseer.gateway.ledger import Ledger, Spend
from overseer.gateway.prices import PriceTable
from overseer.gateway.proxy import Proxy
from overseer.gateway.settings import GatewaySettings
from overseer.gateway.upstream import Target, client_session
from tests.support.servers import PostgresServer, RedisServer

MODEL = "claude-sonnet-5-5"  # $2 / $10 per million tokens
HI = [{"role": "user", "content": "hi"}]


class Gateway:
    def __init__(self, url: str, meter: Meter, ledger: Ledger) -> None:
        self.url, self.meter, self.ledger = url, meter, ledger

    def sdk(self, retries: int = 0) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key="pod-token", max_retries=retries)


@pytest.fixture
async def start_gateway(postgres: PostgresServer) -> AsyncIterator[Any]:
    """start_gateway(model_url, goal_budget) -> Gateway with a ledger in the test PostgreSQL."""
    cleanup: list[Any] = []

    async def start(upstream: str, goal_budget: dict[str, Any] | None = None, redis_url: str | None = None,
                    caller: Caller | None = None, refresh_seconds: float = 0.5) -> Gateway:
        ledger = Ledger(postgres.dsn)
        await ledger.open()
        counters = RedisCounters(redis_url, hold_seconds=60) if redis_url else None
        meter = Meter(ledger, PriceTable(), refresh_seconds=refresh_seconds, counters=counters)
        caller = caller or Caller("team-a", "g-a1", "g", "uid-" + secrets.token_hex(4), "coder", goal_budget)
        if counters is not None:
            cleanup.append(counters.close)

        class Who:
            async def caller(self, token: str) -> Caller:
                return caller

        class Where:
            async def target(self, namespace: str, agent: str) -> Target:
                return Target(upstream, "sk-upstream", MODEL, {})

        session = client_session(GatewaySettings())
        app = web.Application()
        add_routes(app, Proxy(Who(), Where(), session, meter))  # type: ignore[arg-type]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        cleanup.extend([runner.cleanup, session.close, ledger.close])
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        gateway = Gateway(f"http://127.0.0.1:{port}", meter, ledger)
        gateway.caller = caller  # type: ignore[attr-defined]
        return gateway

    yield start
    for close in cleanup:
        await close()


async def rows(postgres: PostgresServer, goal_uid: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(postgres.dsn) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute("SELECT * FROM gateway_spend WHERE goal_uid = %s ORDER BY at", (goal_uid,))
        return await cur.fetchall()


async def test_each_call_is_one_ledger_row_priced_with_its_cache_tokens(start_gateway: Any,
                                                                        postgres: PostgresServer) -> None:
    # A system prompt long enough to be cached, kept an hour: the first call writes it, the second reads it.
    system = [{"type": "text", "text": "You fix parsers. " * 600, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    async with ScriptedModelServer({"conversations": {"default": ["first", "second"]}}) as model:
        gateway = await start_gateway(model.url)
        client = gateway.sdk()
        first = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=HI)  # type: ignore[arg-type]
        second = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=HI, stream=True)  # type: ignore[arg-type]
        async for _ in second:
            pass
        assert await gateway.ledger.flush()
    written, read = await rows(postgres, gateway.caller.goal_uid)

    assert first.usage.cache_creation_input_tokens and written["cache_write_1h_tokens"] == first.usage.cache_creation_input_tokens
    assert written["cache_write_5m_tokens"] == 0
    assert read["cache_read_tokens"] == written["cache_write_1h_tokens"]  # the streamed call's usage was read too
    per_million = Decimal(1_000_000)
    assert written["cost_usd"] == (written["input_tokens"] * 2 + written["output_tokens"] * 10
                                   + written["cache_write_1h_tokens"] * 4) / per_million
    assert read["cost_usd"] == (read["input_tokens"] * 2 + read["output_tokens"] * 10
                                + read["cache_read_tokens"] * Decimal("0.2")) / per_million
    assert (written["namespace"], written["goal"], written["agent"], written["model"]) == ("team-a", "g", "coder", MODEL)


async def test_a_request_id_is_recorded_once(postgres: PostgresServer) -> None:
    ledger = Ledger(postgres.dsn)
    await ledger.open()
    uid = "uid-" + secrets.token_hex(4)
    spend = Spend("req_same", "team-a", "coder", "g", uid, "g-a1", MODEL, 10, 5, 0, 0, 0, Decimal("0.00007"))
    ledger.record(spend)
    ledger.record(spend)
    assert await ledger.flush()
    total = await ledger.goal_total(uid)
    await ledger.close()

    assert (total.requests, total.tokens, total.cost_usd) == (1, 15, Decimal("0.00007"))


async def test_a_call_that_does_not_fit_the_money_budget_is_refused_naming_the_budget(
        start_gateway: Any, postgres: PostgresServer) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        # A call with max_tokens 1000 may cost about $0.01 (output at $10 per million): it fits a $0.021
        # budget whatever was spent so far; one with max_tokens 3000 may cost $0.03 and does not.
        gateway = await start_gateway(model.url, {"maxCostPerGoal": 0.021})
        client = gateway.sdk()
        for _ in range(2):
            await client.messages.create(model=MODEL, max_tokens=1000, messages=HI)  # type: ignore[arg-type]
        calls_before = len(model.requests)
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(model=MODEL, max_tokens=3000, messages=HI)  # type: ignore[arg-type]

    assert refused.value.status_code == 402
    assert refused.value.response.headers[BUDGET_HEADER] == "maxCostPerGoal"
    assert exhausted_budget(refused.value) == "maxCostPerGoal"  # what makes the agent end with BudgetExhausted
    assert re.search(r"budget maxCostPerGoal \$0\.0210 of Goal team-a/g is exhausted: \$0\.000\d spent, "
                     r"\$0\.0000 held by calls in flight, and this call may cost up to \$0\.030\d",
                     refused.value.message), refused.value.message
    assert len(model.requests) == calls_before  # never forwarded


async def test_concurrent_calls_never_spend_past_the_budget(start_gateway: Any, postgres: PostgresServer) -> None:
    budget = 2_000
    async with ScriptedModelServer({"conversations": {"default": [{"reply": "a fairly short answer",
                                                                   "delay": 0.05}]},
                                    "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, {"maxTokensPerGoal": budget})
        client = gateway.sdk()

        async def call() -> str:
            try:
                await client.messages.create(model=MODEL, max_tokens=200, messages=HI)  # type: ignore[arg-type]
                return "ok"
            except anthropic.APIStatusError as e:
                return str(e.status_code)

        outcomes = await asyncio.gather(*[call() for _ in range(20)])
        assert await gateway.ledger.flush()
    spent = sum(r["input_tokens"] + r["output_tokens"] for r in await rows(postgres, gateway.caller.goal_uid))

    assert set(outcomes) == {"ok", "402"}
    assert outcomes.count("ok") == len(model.requests)
    assert spent <= budget


async def test_with_postgres_down_known_goals_go_on_and_their_rows_land_later(
        start_gateway: Any, postgres: PostgresServer) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, {"maxTokensPerGoal": 100_000})
        client = gateway.sdk()
        await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        postgres.stop()
        try:
            await asyncio.sleep(0.6)  # past the refresh: the next call tries the ledger and counts locally
            await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
            assert gateway.ledger.waiting >= 1
            other = await start_gateway(model.url, {"maxTokensPerGoal": 100_000})  # a goal never seen before
            with pytest.raises(anthropic.InternalServerError, match="spend ledger \\(PostgreSQL\\) is unavailable"):
                await other.sdk().messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        finally:
            postgres.start()
        assert await gateway.ledger.flush(timeout=15)
    assert len(await rows(postgres, gateway.caller.goal_uid)) == 2


async def test_tokens_cost_and_refusals_are_counted_in_metrics(start_gateway: Any) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_out = sample("overseer_gateway_tokens_total", namespace="team-a", agent="coder", model=MODEL, kind="output")
    before_refused = sample("overseer_gateway_refusals_total", status="402", reason="billing_error")
    before_budget = sample("overseer_gateway_budget_refusals_total", namespace="team-a", agent="coder",
                           budget="maxTokensPerGoal")
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, {"maxTokensPerGoal": 300})
        client = gateway.sdk()
        await client.messages.create(model=MODEL, max_tokens=100, messages=HI)  # type: ignore[arg-type]
        with pytest.raises(anthropic.APIStatusError):
            await client.messages.create(model=MODEL, max_tokens=1000, messages=HI)  # type: ignore[arg-type]

    assert sample("overseer_gateway_tokens_total", namespace="team-a", agent="coder", model=MODEL,
                  kind="output") > before_out
    assert sample("overseer_gateway_refusals_total", status="402", reason="billing_error") == before_refused + 1
    assert sample("overseer_gateway_budget_refusals_total", namespace="team-a", agent="coder",
                  budget="maxTokensPerGoal") == before_budget + 1


async def test_two_replicas_sharing_redis_never_spend_past_one_budget(start_gateway: Any, postgres: PostgresServer,
                                                                     redis_server: RedisServer) -> None:
    # Calls whose use is close to what they hold (~125 input, 20 output tokens): each replica counting
    # alone would let ~8 through, ~2,000 tokens together; sharing the counters keeps both under 1,000.
    budget = 1_000
    question = [{"role": "user", "content": "Why does the parser fail on tabs? " * 12}]
    async with ScriptedModelServer({"conversations": {"default": [{"reply": "x" * 80, "delay": 0.05}]},
                                    "repeat_last": True}) as model:
        # Ledger reads an hour apart: only the shared counters can keep the replicas in step.
        one = await start_gateway(model.url, {"maxTokensPerGoal": budget}, redis_server.url, refresh_seconds=3600)
        two = await start_gateway(model.url, redis_url=redis_server.url, caller=one.caller, refresh_seconds=3600)

        async def call(gateway: Gateway) -> str:
            try:
                await gateway.sdk().messages.create(model=MODEL, max_tokens=20, messages=question)  # type: ignore[arg-type]
                return "ok"
            except anthropic.APIStatusError as e:
                return str(e.status_code)

        outcomes = await asyncio.gather(*[call(one if i % 2 else two) for i in range(40)])
        assert await one.ledger.flush() and await two.ledger.flush()
    spent = [r["input_tokens"] + r["output_tokens"] for r in await rows(postgres, one.caller.goal_uid)]
    shared = redis.Redis.from_url(redis_server.url)

    assert set(outcomes) == {"ok", "402"}
    assert sum(spent) <= budget, spent
    assert len(spent) >= 5 and sum(spent) > budget / 2  # most of the budget was usable
    assert int(shared.hget(f"overseer:gw:spent:{{{one.caller.goal_uid}}}", "t")) == sum(spent)  # type: ignore[arg-type]
    shared.close()


async def test_without_redis_a_replica_counts_alone_and_goes_on(start_gateway: Any, redis_server: RedisServer) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, {"maxTokensPerGoal": 1_000}, redis_server.url)
        client = gateway.sdk()
        await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        redis_server.stop()
        try:
            await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
            with pytest.raises(anthropic.APIStatusError) as refused:  # local counting still enforces the budget
                await client.messages.create(model=MODEL, max_tokens=5_000, messages=HI)  # type: ignore[arg-type]
            assert refused.value.status_code == 402
        finally:
            redis_server.start()
        await gateway.ledger.flush()
        await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        # An answer goes out before its call is settled: wait for the last one's row.
        for _ in range(100):
            if (await gateway.ledger.goal_total(gateway.caller.goal_uid)).requests == 3:
                break
            await asyncio.sleep(0.05)
    assert len(model.requests) == 3
    # Back in Redis, with what was spent while it was down (loaded again from the ledger).
    shared = redis.Redis.from_url(redis_server.url)
    spent = int(shared.hget(f"overseer:gw:spent:{{{gateway.caller.goal_uid}}}", "t"))  # type: ignore[arg-type]
    shared.close()
    total = await gateway.ledger.goal_total(gateway.caller.goal_uid)
    assert spent == total.tokens and total.requests == 3


async def test_a_hold_whose_replica_died_lapses_and_a_late_settle_frees_nothing_twice(
        redis_server: RedisServer) -> None:
    counters = RedisCounters(redis_server.url, hold_seconds=0.5)
    goal = "uid-" + secrets.token_hex(4)
    try:
        await counters.load(goal, 0, Decimal(0))
        assert await counters.hold(goal, "dies", 600, Decimal(0), 1_000, None) is None  # never settled
        refused = await counters.hold(goal, "waits", 600, Decimal(0), 1_000, None)
        assert isinstance(refused, Refused) and refused.held_tokens == 600
        await asyncio.sleep(0.6)
        assert await counters.hold(goal, "second", 600, Decimal(0), 1_000, None) is None  # the first lapsed
        await counters.settle(goal, "dies", 600, Decimal(0), 0, Decimal(0))  # its replica was only slow
        await counters.settle(goal, "second", 600, Decimal(0), 500, Decimal(0))
        assert await counters.hold(goal, "third", 400, Decimal(0), 1_000, None) is None
        fourth = await counters.hold(goal, "fourth", 101, Decimal(0), 1_000, None)
        assert isinstance(fourth, Refused) and (fourth.held_tokens, fourth.spent_tokens) == (400, 500)
    finally:
        await counters.close()
