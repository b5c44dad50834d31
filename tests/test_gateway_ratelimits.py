"""The gateway's rate limits in one replica without Redis: per Agent, for all Agents, and the 429
a limited call gets."""

from __future__ import annotations

import pytest

from overseer.gateway.errors import GatewayError
from overseer.gateway.identity import Caller
from overseer.gateway.ratelimits import RateLimits
from overseer.gateway.settings import GatewaySettings

CODER = Caller("team-a", "p1", "fix-ci", "uid-1", "coder")
REVIEWER = Caller("team-a", "p2", "review", "uid-2", "reviewer")
BODY = b'{"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": []}'


def limits(**settings: int | float) -> RateLimits:
    return RateLimits(None, GatewaySettings(rate_limit_replicas=1, rate_limit_wait_seconds=0, **settings))  # type: ignore[arg-type]


async def test_an_agent_over_its_limit_gets_429_with_retry_after_and_other_agents_go_on() -> None:
    gateway = limits(agent_requests_per_minute=2)
    for _ in range(2):
        await gateway.acquire(CODER, BODY)

    with pytest.raises(GatewayError) as limited:
        await gateway.acquire(CODER, BODY)
    await gateway.acquire(REVIEWER, BODY)

    assert (limited.value.status, limited.value.error_type) == (429, "rate_limit_error")
    assert 55 < (limited.value.retry_after or 0) <= 60
    assert limited.value.message.startswith("rate limit of Agent team-a/coder reached (2 requests per minute, set "
                                            "by OVERSEER_GATEWAY_AGENT_REQUESTS_PER_MINUTE")
    assert dict(limited.value.answer().headers)["retry-after"] == "60"


async def test_the_global_limit_counts_every_agent() -> None:
    gateway = limits(requests_per_minute=1)
    await gateway.acquire(CODER, BODY)

    with pytest.raises(GatewayError, match="rate limit of all Agents together reached"):
        await gateway.acquire(REVIEWER, BODY)


async def test_tokens_count_what_calls_used_once_they_are_settled() -> None:
    gateway = limits(agent_tokens_per_minute=1000)
    held = await gateway.acquire(CODER, BODY)  # counts the input estimate: ~16 tokens
    await gateway.settle(held, {"input_tokens": 900, "output_tokens": 90})

    with pytest.raises(GatewayError, match=r"\(1000 tokens per minute"):
        await gateway.acquire(CODER, BODY)


def test_without_limits_the_gateway_does_not_rate_limit() -> None:
    assert not limits().enabled and limits(agent_tokens_per_minute=5).enabled
