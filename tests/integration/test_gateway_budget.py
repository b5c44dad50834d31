"""Cost and budgets through the gateway, with a real PostgreSQL ledger, the real SDK and the
scripted model: cache-aware prices, one ledger row per call, refusals that name the budget,
concurrent calls against one budget, and PostgreSQL outages."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import anthropic
import orjson
import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from overseer.agent.gateway_token import exhausted_budget
from overseer.testing.scripted_model import ScriptedModelServer
from overseer.api.gateway import BUDGET_HEADER
from overseer.gateway.app import serve, upstream_pool
from overseer.gateway.budget import Meter
from overseer.gateway.counters import RedisCounters, Refused, Unknown
from overseer.gateway.errors import GatewayError
from overseer.gateway.status import CostStatus
from overseer.gateway.identity import Ancestor, Caller
from overseer.gateway.ledger import Ledger, Spend
from overseer.prices import PriceTable
from overseer.gateway.proxy import Proxy
from overseer.gateway.ratelimits import RateLimits
from overseer.gateway.scopes import NamespaceBudgets, scopes
from overseer.gateway.settings import GatewaySettings
from overseer.gateway.upstream import Target
from tests.support.servers import PostgresServer, RedisServer

MODEL = "claude-sonnet-5-5"  # $2 / $10 per million tokens
HI = [{"role": "user", "content": "hi"}]


class Gateway:
    def __init__(self, url: str, meter: Meter, ledger: Ledger) -> None:
        self.url, self.meter, self.ledger = url, meter, ledger

    def sdk(self, retries: int = 0, goal: str = "pod-token") -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=goal, max_retries=retries)


@pytest.fixture
async def start_gateway(postgres: PostgresServer) -> AsyncIterator[Any]:
    """start_gateway(model_url, goal_budget) -> Gateway with a ledger in the test PostgreSQL."""
    cleanup: list[Any] = []

    async def start(upstream: str, goal_budget: dict[str, Any] | None = None, redis_url: str | None = None,
                    caller: Caller | None = None, refresh_seconds: float = 0.5,
                    agent_budget: dict[str, Any] | None = None, namespaces: NamespaceBudgets | None = None,
                    limits: GatewaySettings | None = None, lease_calls: int = 1) -> Gateway:
        ledger = Ledger(postgres.dsn)
        await ledger.open()
        client = aioredis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1) if redis_url else None
        counters = RedisCounters(client, hold_seconds=60) if client else None
        meter = Meter(ledger, PriceTable(), refresh_seconds=refresh_seconds, counters=counters, namespaces=namespaces,
                      lease_calls=lease_calls)
        caller = caller or Caller("team-a", "g-a1", "g", "uid-" + secrets.token_hex(4), "coder", goal_budget)
        if client is not None:
            cleanup.append(client.aclose)

        class Who:
            """The fixture's caller for "pod-token"; another token is a goal of that name of the same Agent."""

            async def caller(self, token: str) -> Caller:
                if token == "pod-token":
                    return caller
                return Caller(caller.namespace, f"{token}-a1", token, f"uid-{caller.namespace}-{token}", caller.agent,
                              goal_budget)

        class Where:
            async def target(self, namespace: str, agent: str) -> Target:
                return Target(upstream, "sk-upstream", MODEL, agent_budget or {})

        pool = upstream_pool(GatewaySettings())
        server = await serve(Proxy(Who(), Where(), pool, meter,  # type: ignore[arg-type]
                                   RateLimits(client, limits) if limits else None), "127.0.0.1", 0)
        cleanup.extend([server.close, pool.close, ledger.close])
        gateway = Gateway(f"http://127.0.0.1:{server.port}", meter, ledger)
        gateway.caller = caller  # type: ignore[attr-defined]
        return gateway

    yield start
    for close in cleanup:
        await close()


async def settled(postgres: PostgresServer, gateways: list[Gateway], calls: int, goal_uid: str = "",
                  namespace: str = "") -> None:
    """Wait until that many calls of a goal or namespace are in the ledger (an answer goes out before
    its call is settled)."""
    column, value = ("goal_uid", goal_uid) if goal_uid else ("namespace", namespace)
    for _ in range(200):
        for g in gateways:
            assert await g.ledger.flush()
        try:
            async with await psycopg.AsyncConnection.connect(postgres.dsn) as conn:
                cur = await conn.execute(f"SELECT count(*) FROM gateway_spend WHERE {column} = %s", (value,))
                if (await cur.fetchone())[0] >= calls:  # type: ignore[index]
                    return
        except psycopg.errors.UndefinedTable:  # no row written yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {calls} calls of {value} in the ledger")


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

    # refused while the others' holds stand in the way: 429, ask again; once spend leaves no room: 402
    assert "ok" in outcomes and set(outcomes) - {"ok"} and set(outcomes) <= {"ok", "429", "402"}
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
        await settled(postgres, [one, two], outcomes.count("ok"), goal_uid=one.caller.goal_uid)
    spent = [r["input_tokens"] + r["output_tokens"] for r in await rows(postgres, one.caller.goal_uid)]
    shared = redis.Redis.from_url(redis_server.url)

    assert "ok" in outcomes and set(outcomes) - {"ok"} and set(outcomes) <= {"ok", "429", "402"}
    assert sum(spent) <= budget, spent
    assert len(spent) >= 5 and sum(spent) > budget / 2  # most of the budget was usable
    assert int(shared.hget(f"overseer:gw:{{team-a}}:goal:{one.caller.goal_uid}", "t")) == sum(spent)  # type: ignore[arg-type]
    assert int(shared.hget(f"overseer:gw:{{team-a}}:goal:{one.caller.goal_uid}", "ht")) == 0  # nothing in flight
    shared.close()


def evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))  # type: ignore[union-attr]


async def two_leasing_replicas(start_gateway: Any, model_url: str, redis_url: str, budget: int) -> list[Gateway]:
    one = await start_gateway(model_url, {"maxTokensPerGoal": budget}, redis_url, refresh_seconds=3600,
                              lease_calls=128)
    two = await start_gateway(model_url, redis_url=redis_url, caller=one.caller, refresh_seconds=3600, lease_calls=128)
    return [one, two]


async def forty_calls(clients: list[anthropic.AsyncAnthropic]) -> list[str]:
    """40 calls at once, half on each replica, each holding ~145 tokens and spending close to that."""
    question = [{"role": "user", "content": "Why does the parser fail on tabs? " * 12}]

    async def call(client: anthropic.AsyncAnthropic) -> str:
        try:
            await client.messages.create(model=MODEL, max_tokens=20, messages=question)  # type: ignore[arg-type]
            return "ok"
        except anthropic.APIStatusError as e:
            return str(e.status_code)

    return await asyncio.gather(*[call(clients[i % 2]) for i in range(40)])


async def test_far_from_a_limit_two_replicas_lease_it_and_most_calls_skip_redis(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer) -> None:
    shared = redis.Redis.from_url(redis_server.url)
    async with ScriptedModelServer({"conversations": {"default": [{"reply": "x" * 80, "delay": 0.02}]},
                                    "repeat_last": True}) as model:
        gateways = await two_leasing_replicas(start_gateway, model.url, redis_server.url, 10_000_000)
        round_trips = evalsha_calls(shared)
        clients = [gateway.sdk() for gateway in gateways]
        outcomes = [o for _ in range(5) for o in await forty_calls(clients)]
        round_trips = evalsha_calls(shared) - round_trips
        await settled(postgres, gateways, 200, goal_uid=gateways[0].caller.goal_uid)  # type: ignore[attr-defined]
        for gateway in gateways:
            await gateway.meter.close()
    spent = [r["input_tokens"] + r["output_tokens"] for r in await rows(postgres, gateways[0].caller.goal_uid)]  # type: ignore[attr-defined]
    key = f"overseer:gw:{{team-a}}:goal:{gateways[0].caller.goal_uid}"  # type: ignore[attr-defined]
    redis_spent, redis_held = int(shared.hget(key, "t")), int(shared.hget(key, "ht"))  # type: ignore[arg-type]
    shared.close()

    assert outcomes == ["ok"] * 200
    assert round_trips < 200 / 4, round_trips  # each call alone: 2 scripts (hold, settle)
    assert (redis_spent, redis_held) == (sum(spent), 0)  # every lease gave back what its calls did not use


async def test_two_replicas_leasing_one_budget_never_spend_past_it(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer) -> None:
    # 20,000 tokens: ~137 calls' worst cases; far from the limit each replica leases up to a 16th of
    # what is free, near it each call holds its own.
    budget = 20_000
    async with ScriptedModelServer({"conversations": {"default": [{"reply": "x" * 80, "delay": 0.02}]},
                                    "repeat_last": True}) as model:
        gateways = await two_leasing_replicas(start_gateway, model.url, redis_server.url, budget)
        clients, outcomes = [gateway.sdk() for gateway in gateways], []
        while "402" not in outcomes[-40:]:
            outcomes += await forty_calls(clients)
        await settled(postgres, gateways, outcomes.count("ok"), goal_uid=gateways[0].caller.goal_uid)  # type: ignore[attr-defined]
    spent = [r["input_tokens"] + r["output_tokens"] for r in await rows(postgres, gateways[0].caller.goal_uid)]  # type: ignore[attr-defined]

    assert set(outcomes) <= {"ok", "429", "402"}
    assert budget / 2 < sum(spent) <= budget, sum(spent)


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
    spent = int(shared.hget(f"overseer:gw:{{team-a}}:goal:{gateway.caller.goal_uid}", "t"))  # type: ignore[arg-type]
    shared.close()
    total = await gateway.ledger.goal_total(gateway.caller.goal_uid)
    assert spent == total.tokens and total.requests == 3


def namespace() -> str:
    """A namespace of its own: daily budgets count every call of a namespace today, other tests' too."""
    return "ns-" + secrets.token_hex(4)


async def day_total(postgres: PostgresServer, ns: str) -> tuple[int, Decimal]:
    async with await psycopg.AsyncConnection.connect(postgres.dsn) as conn:
        cur = await conn.execute("SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0)"
                                 " FROM gateway_spend WHERE namespace = %s", (ns,))
        tokens, usd = await cur.fetchone()  # type: ignore[misc]
    return int(tokens), Decimal(usd)


@pytest.mark.parametrize("shared", [False, True], ids=["ledger", "redis"])
async def test_an_agents_daily_budget_counts_all_its_goals_and_the_refusal_names_it_and_the_amount(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer, shared: bool) -> None:
    ns = namespace()
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        # A call with max_tokens 1000 may cost about $0.01 and fits $0.015 next to what the others spent (a
        # few cents of a cent); one with max_tokens 2000, of a third goal of the Agent, may cost $0.02.
        gateway = await start_gateway(model.url, caller=Caller(ns, "g-a1", "g", f"uid-{ns}", "coder"),
                                      agent_budget={"maxCostPerDay": 0.015}, redis_url=redis_server.url if shared else None)
        for goal in ("fix-ci", "fix-docs"):
            await gateway.sdk(goal=goal).messages.create(model=MODEL, max_tokens=1000, messages=HI)  # type: ignore[arg-type]
        await settled(postgres, [gateway], 2, namespace=ns)
        await asyncio.sleep(0.6)  # past the ledger refresh of a replica counting alone
        calls_before = len(model.requests)
        with pytest.raises(anthropic.APIStatusError) as refused:
            await gateway.sdk(goal="fix-tests").messages.create(model=MODEL, max_tokens=2000, messages=HI)  # type: ignore[arg-type]
    tokens, usd = await day_total(postgres, ns)

    assert refused.value.status_code == 402 and len(model.requests) == calls_before
    assert exhausted_budget(refused.value) == "Agent.maxCostPerDay"
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert (f"budget maxCostPerDay $0.0150 of Agent {ns}/coder for {today} (UTC) is exhausted: "
            f"${usd:.4f} spent, $0.0000 held by calls in flight, and this call may cost up to $0.020") \
        in refused.value.message, refused.value.message
    assert usd > 0


async def test_a_namespaces_daily_budget_from_the_platforms_file_counts_every_agent(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer, tmp_path: Any) -> None:
    ns = namespace()
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(f"default: {{maxCostPerDay: 1000}}\nnamespaces:\n  {ns}: {{maxTokensPerDay: 1000}}\n")
    long_question = [{"role": "user", "content": "word " * 400}]  # 500 input tokens
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        coder = await start_gateway(model.url, caller=Caller(ns, "g-a1", "g", f"uid-{ns}-g", "coder"),
                                    redis_url=redis_server.url, namespaces=NamespaceBudgets(budgets))
        reviewer = await start_gateway(model.url, caller=Caller(ns, "r-a1", "r", f"uid-{ns}-r", "reviewer"),
                                       redis_url=redis_server.url, namespaces=NamespaceBudgets(budgets))
        await coder.sdk().messages.create(model=MODEL, max_tokens=50, messages=long_question)  # type: ignore[arg-type]
        await settled(postgres, [coder], 1, namespace=ns)
        with pytest.raises(anthropic.APIStatusError) as refused:  # fits 1000 alone, not after the coder's 500
            await reviewer.sdk().messages.create(model=MODEL, max_tokens=600, messages=HI)  # type: ignore[arg-type]
        await reviewer.sdk().messages.create(model=MODEL, max_tokens=100, messages=HI)  # type: ignore[arg-type]
        assert await coder.ledger.flush() and await reviewer.ledger.flush()
    tokens, _ = await day_total(postgres, ns)

    assert exhausted_budget(refused.value) == "Namespace.maxTokensPerDay"
    assert re.search(rf"budget maxTokensPerDay 1000 of namespace {ns} for \d{{4}}-\d{{2}}-\d{{2}} \(UTC; ConfigMap "
                     r"overseer-gateway-budgets\) is exhausted: 50\d tokens spent", refused.value.message), \
        refused.value.message
    assert len(model.requests) == 2 and tokens <= 1000


async def test_two_replicas_and_twenty_goals_never_spend_past_one_agents_daily_budget(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer) -> None:
    ns, budget = namespace(), 1_500
    question = [{"role": "user", "content": "Why does the parser fail on tabs? " * 12}]
    async with ScriptedModelServer({"conversations": {"default": [{"reply": "x" * 80, "delay": 0.05}]},
                                    "repeat_last": True}) as model:
        caller = Caller(ns, "g-a1", "g", f"uid-{ns}", "coder")
        one, two = [await start_gateway(model.url, caller=caller, agent_budget={"maxTokensPerDay": budget},
                                        redis_url=redis_server.url, refresh_seconds=3600) for _ in range(2)]

        async def call(i: int) -> str:
            try:
                await (one if i % 2 else two).sdk(goal=f"goal-{i}").messages.create(
                    model=MODEL, max_tokens=20, messages=question)  # type: ignore[arg-type]
                return "ok"
            except anthropic.APIStatusError as e:
                return str(e.status_code)

        outcomes = await asyncio.gather(*[call(i) for i in range(20)])
        await settled(postgres, [one, two], outcomes.count("ok"), namespace=ns)
    tokens, _ = await day_total(postgres, ns)

    assert "ok" in outcomes and set(outcomes) - {"ok"} and set(outcomes) <= {"ok", "429", "402"}
    assert outcomes.count("ok") == len(model.requests)
    assert budget / 2 < tokens <= budget


async def test_a_hold_a_replica_never_settles_lapses_and_a_late_settle_frees_nothing_twice(
        redis_server: RedisServer) -> None:
    ns = namespace()
    client = aioredis.from_url(redis_server.url)
    counters = RedisCounters(client, hold_seconds=0.3)
    caller = Caller(ns, "g-a1", "g", f"uid-{ns}", "coder")
    [goal] = scopes(caller, Target("http://model", "k", MODEL, {"maxTokensPerGoal": 1000}), NamespaceBudgets(), "d")
    assert await counters.hold(ns, [goal], "req-1", 10, Decimal(0)) == Unknown(0)
    await counters.load(ns, goal, 100, Decimal(0))
    assert await counters.hold(ns, [goal], "req-died", 800, Decimal(0)) is None  # its replica dies: never settled
    refused = await counters.hold(ns, [goal], "req-2", 200, Decimal(0))
    await asyncio.sleep(0.4)
    after = await counters.hold(ns, [goal], "req-3", 200, Decimal(0))
    await counters.settle(ns, [goal], "req-died", 800, Decimal(0), 0, Decimal(0))  # its replica was only slow
    await counters.settle(ns, [goal], "req-3", 200, Decimal(0), 150, Decimal(0))
    state = await client.hgetall(RedisCounters.key(ns, goal))
    await client.aclose()

    assert isinstance(refused, Refused) and (refused.spent_tokens, refused.held_tokens) == (100, 800)
    assert after is None
    assert (int(state[b"t"]), int(state[b"ht"])) == (250, 0)  # not -800 held: the lapsed hold left once


async def test_a_lease_is_at_most_a_sixteenth_of_what_is_free_and_a_dead_replicas_lease_lapses_soon(
        redis_server: RedisServer) -> None:
    ns = namespace()
    client = aioredis.from_url(redis_server.url)
    counters = RedisCounters(client, hold_seconds=60)
    caller = Caller(ns, "g-a1", "g", f"uid-{ns}", "coder")
    [goal] = scopes(caller, Target("http://model", "k", MODEL, {"maxTokensPerGoal": 10_000}), NamespaceBudgets(), "d")
    await counters.load(ns, goal, 0, Decimal(0))
    units = await counters.lease(ns, [goal], "lease-1", 100, 0, 128, 16, lease_seconds=0.3)  # its replica dies
    held = int(await client.hget(RedisCounters.key(ns, goal), "ht"))  # type: ignore[arg-type]
    await asyncio.sleep(0.4)
    near = await counters.lease(ns, [goal], "req-2", 1_000, 0, 128, 16, lease_seconds=0.3)  # 9,900 free: 1/16 < 1 call
    state = await client.hgetall(RedisCounters.key(ns, goal))
    lapse = await client.zscore(RedisCounters.key(ns, goal) + ":holds", "req-2:1000:0")
    await client.aclose()

    assert (units, held) == (6, 600)  # 10,000 free / 100 per call / 16
    assert near == 1 and int(state[b"ht"]) == 1_000  # the lapsed lease left; the call holds only its own
    # a call's own hold lapses as any call's: soon, unless its replica keeps it alive
    assert lapse is not None and time.time() + 25 < lapse <= time.time() + 30


async def test_over_an_agents_rate_limit_a_call_gets_429_with_retry_after_and_goes_through_later(
        start_gateway: Any, redis_server: RedisServer) -> None:
    limits = GatewaySettings(agent_requests_per_minute=2, rate_limit_window_seconds=2, rate_limit_wait_seconds=0)
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, caller=Caller(namespace(), "g-a1", "g", "uid", "coder"),
                                      redis_url=redis_server.url, limits=limits)
        for _ in range(2):
            await gateway.sdk().messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as limited:
            await gateway.sdk().messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        assert len(model.requests) == 2
        started = asyncio.get_running_loop().time()
        # The agent's SDK retries a 429 after retry-after: the same call goes through once the window moved.
        answer = await gateway.sdk(retries=2).messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        waited = asyncio.get_running_loop().time() - started

    retry_after = float(limited.value.response.headers["retry-after-ms"]) / 1000
    assert 0 < retry_after <= 2 and limited.value.response.headers["retry-after"] in ("1", "2")
    assert "rate limit of Agent" in limited.value.message and "2 requests per 2 seconds" in limited.value.message
    assert answer.content[0].text == "ok" and len(model.requests) == 3 and waited >= 0.2


async def test_a_call_over_the_rate_limit_waits_briefly_rather_than_being_refused(start_gateway: Any) -> None:
    limits = GatewaySettings(requests_per_minute=1, rate_limit_window_seconds=0.5, rate_limit_wait_seconds=3)
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, caller=Caller(namespace(), "g-a1", "g", "uid", "coder"),
                                      limits=limits)  # no Redis: this replica limits alone
        client = gateway.sdk()
        started = asyncio.get_running_loop().time()
        for _ in range(3):
            await client.messages.create(model=MODEL, max_tokens=10, messages=HI)  # type: ignore[arg-type]
        took = asyncio.get_running_loop().time() - started

    assert len(model.requests) == 3 and took >= 0.5  # no 429: each waited for the window to move


@pytest.mark.parametrize("shared", [False, True], ids=["ledger", "redis"])
async def test_sub_goals_spend_their_parents_budget_and_then_the_parent_is_refused_naming_it(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer, shared: bool) -> None:
    ns = namespace()
    parent_uid = f"uid-{ns}-parent"  # what the fixture's token "parent" is charged to
    budget = {"maxCostPerGoal": 0.021}
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        # The sub-goal has no per-goal budget of its own; each call with max_tokens 1000 may cost ~$0.01.
        gateway = await start_gateway(model.url, budget, redis_url=redis_server.url if shared else None, caller=Caller(
            ns, "sub-a1", "sub", f"uid-{ns}-sub", "coder", None, (Ancestor("parent", parent_uid, budget),)))
        sub = gateway.sdk()
        for _ in range(2):
            await sub.messages.create(model=MODEL, max_tokens=1000, messages=HI)  # type: ignore[arg-type]
        await settled(postgres, [gateway], 2, namespace=ns)
        await asyncio.sleep(0.6)  # past the ledger refresh of a replica counting alone
        calls_before = len(model.requests)
        with pytest.raises(anthropic.APIStatusError) as sub_refused:
            await sub.messages.create(model=MODEL, max_tokens=3000, messages=HI)  # type: ignore[arg-type]
        with pytest.raises(anthropic.APIStatusError) as parent_refused:  # the parent's own call, same budget
            await gateway.sdk(goal="parent").messages.create(model=MODEL, max_tokens=3000, messages=HI)  # type: ignore[arg-type]
        assert len(model.requests) == calls_before
    total, own = await gateway.ledger.goal_total(parent_uid), await gateway.ledger.goal_own_total(parent_uid)

    assert exhausted_budget(sub_refused.value) == "Parent.maxCostPerGoal"
    assert re.search(rf"budget maxCostPerGoal \$0\.0210 of Goal {ns}/parent \(with its sub-goals, among them sub\) "
                     r"is exhausted: \$0\.000\d spent", sub_refused.value.message), sub_refused.value.message
    assert exhausted_budget(parent_refused.value) == "maxCostPerGoal"  # the parent ends BudgetExhausted
    assert f"of Goal {ns}/parent is exhausted: ${total.cost_usd:.4f} spent" in parent_refused.value.message
    assert total.requests == 2 and total.cost_usd > 0 and own.requests == 0


async def test_a_call_ten_sub_goals_deep_counts_toward_every_ancestors_budget_in_one_hold(
        start_gateway: Any, postgres: PostgresServer, redis_server: RedisServer) -> None:
    ns = namespace()
    chain = tuple(Ancestor(f"level-{n}", f"uid-{ns}-level-{n}", {"maxTokensPerGoal": 100_000 - n})
                  for n in range(9, -1, -1))  # parent first, the top-level goal last
    async with ScriptedModelServer({"conversations": {"default": ["ok"]}, "repeat_last": True}) as model:
        gateway = await start_gateway(model.url, redis_url=redis_server.url, caller=Caller(
            ns, "deep-a1", "deep", f"uid-{ns}-deep", "coder", {"maxTokensPerGoal": 50_000}, chain))
        await gateway.sdk().messages.create(model=MODEL, max_tokens=100, messages=HI)  # type: ignore[arg-type]
        await settled(postgres, [gateway], 1, namespace=ns)
    shared = redis.Redis.from_url(redis_server.url)
    counted = [shared.hget(f"overseer:gw:{{{ns}}}:goal:{a.goal_uid}", "t") for a in chain]
    shared.close()
    spent = (await gateway.ledger.goal_total(gateway.caller.goal_uid)).tokens

    assert spent > 0
    assert [int(t) for t in counted] == [spent] * 10  # type: ignore[arg-type]
    assert [(await gateway.ledger.goal_total(a.goal_uid)).tokens for a in chain] == [spent] * 10


async def test_a_parents_cost_in_status_includes_its_sub_goals_and_says_its_own(postgres: PostgresServer) -> None:
    ns = namespace()

    class Kube:
        patches: dict[str, Any] = {}

        async def merge_patch(self, url: str, body: Any) -> None:
            self.patches[url.rsplit("/", 2)[-2]] = body["status"]["cost"]

    ledger = Ledger(postgres.dsn)
    await ledger.open()
    kube = Kube()
    status = CostStatus(kube, ledger)  # type: ignore[arg-type]
    for n, (goal, ancestors) in enumerate([("parent", ()), ("child", ("parent",)), ("grandchild", ("child", "parent"))]):
        spend = Spend(f"req-{ns}-{n}", ns, "coder", goal, f"uid-{ns}-{goal}", f"{goal}-a1", MODEL, 100, 10, 0, 0, 0,
                      Decimal(n + 1) / 1000, tuple(f"uid-{ns}-{a}" for a in ancestors), ancestors)
        ledger.record(spend)
        status.spent(spend)
    await status.write()
    await ledger.close()

    assert kube.patches["parent"] == {"usd": 0.006, "tokens": 330, "requests": 3, "ownUsd": 0.001}
    assert kube.patches["child"] == {"usd": 0.005, "tokens": 220, "requests": 2, "ownUsd": 0.002}
    assert kube.patches["grandchild"] == {"usd": 0.003, "tokens": 110, "requests": 1, "ownUsd": 0.003}


async def _replica(postgres: PostgresServer, client: aioredis.Redis, live_seconds: float) -> tuple[Meter, Ledger]:
    ledger = Ledger(postgres.dsn)
    await ledger.open()
    counters = RedisCounters(client, hold_seconds=660, live_seconds=live_seconds)  # 660: the default's upstream timeout + 60
    return Meter(ledger, PriceTable(), counters=counters, lease_calls=16), ledger


def die(meter: Meter) -> None:
    """What a SIGKILL leaves of a replica's budget work: its holds in Redis, nobody renewing them."""
    assert meter._leases is not None and meter._leases._keeper is not None
    meter._leases._keeper.cancel()


LAST_CALL = orjson.dumps({"model": MODEL, "max_tokens": 4096, "messages": HI})


def one_call_budget() -> tuple[Caller, Target]:
    """A fresh goal whose money budget fits LAST_CALL's worst case once and a half."""
    worst = PriceTable().price(MODEL).most(len(LAST_CALL) // 4, 4096)  # type: ignore[union-attr]
    caller = Caller(namespace(), "g-a1", "g", "uid-" + secrets.token_hex(4), "coder")
    return caller, Target("http://model", "k", MODEL, {"maxCostPerGoal": float(worst * Decimal("1.5"))})


async def test_a_goals_call_retried_after_its_replica_died_holding_it_waits_for_the_dead_hold_instead_of_failing(
        postgres: PostgresServer, redis_server: RedisServer) -> None:
    """A goal whose budget fits one call's worst case (about $0.04 here) has its call cut by the death of
    the replica holding it; the call retried on another replica must not end the goal BudgetExhausted
    while the dead replica's hold is all that stands in the way."""
    client = aioredis.from_url(redis_server.url)
    caller, target = one_call_budget()
    dying, dying_ledger = await _replica(postgres, client, live_seconds=1.0)
    other, other_ledger = await _replica(postgres, client, live_seconds=1.0)
    try:
        await dying.reserve(caller, target, LAST_CALL, "req-cut")  # held; the replica dies before it answers
        die(dying)
        with pytest.raises(GatewayError) as first:
            await other.reserve(caller, target, LAST_CALL, "req-retried")
        assert first.value.status == 429 and first.value.retry_after == 1.0, first.value.message
        assert "calls in flight hold" in first.value.message and "$0.0" in first.value.message

        retried = None
        async with asyncio.timeout(10):  # the agent waits the retry-after and asks again
            while retried is None:
                await asyncio.sleep(first.value.retry_after or 1)
                try:
                    retried = await other.reserve(caller, target, LAST_CALL, "req-retried")
                except GatewayError as e:
                    assert e.status == 429, e.message
        await other.settle(retried, {"input_tokens": 10, "output_tokens": 100}, MODEL)
    finally:
        await other.close()
        for ledger in (dying_ledger, other_ledger):
            await ledger.close()
        await client.aclose()


async def test_a_live_replica_keeps_its_holds_while_its_call_outlasts_their_lapse(
        postgres: PostgresServer, redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    caller, target = one_call_budget()
    slow, slow_ledger = await _replica(postgres, client, live_seconds=1.0)
    other, other_ledger = await _replica(postgres, client, live_seconds=1.0)
    try:
        held = await slow.reserve(caller, target, LAST_CALL, "req-slow")  # a long answer, its replica alive
        await asyncio.sleep(3.5)  # three and a half lapses
        with pytest.raises(GatewayError) as waiting:
            await other.reserve(caller, target, LAST_CALL, "req-second")
        assert waiting.value.status == 429, waiting.value.message

        await slow.settle(held, {"input_tokens": 10, "output_tokens": 100}, MODEL)  # cheap in the end
        second = await other.reserve(caller, target, LAST_CALL, "req-second")
        await other.settle(second, {"input_tokens": 10, "output_tokens": 4000}, MODEL)
        with pytest.raises(GatewayError) as spent:  # now spend, not holds, leaves no room: the goal's end
            await other.reserve(caller, target, LAST_CALL, "req-third")
        assert spent.value.status == 402 and spent.value.headers == {BUDGET_HEADER: "maxCostPerGoal"}
    finally:
        for meter in (slow, other):
            await meter.close()
        for ledger in (slow_ledger, other_ledger):
            await ledger.close()
        await client.aclose()
