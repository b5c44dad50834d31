"""The rate limiter, event stream and steering queue that agent pods share through a real Redis."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import multiprocessing
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from overseer.ratelimit import RateLimiter
from overseer.live import EventStream, EventType, SteeringPoller, SteeringQueue, SteeringUnavailable, connect
from tests.support.servers import RedisServer

WINDOW = 1.0  # seconds: the limiter's minute, scaled down so the tests take seconds


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    """Stop Redis for the block; the block may start it again, and it is running afterwards."""
    server.stop()
    try:
        yield
    finally:
        if server.proc is None or server.proc.poll() is not None:
            server.start()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def most_in_any_window(times: list[float], window: float, weights: list[int] | None = None) -> int:
    """The largest count (or weight) of grants in any half-open window (t - window, t]."""
    order = sorted(range(len(times)), key=times.__getitem__)
    at = [times[i] for i in order]
    weight = [1 if weights is None else weights[i] for i in order]
    prefix = [0]
    for w in weight:
        prefix.append(prefix[-1] + w)
    best = 0
    for i, t in enumerate(at):
        first = bisect.bisect_right(at, t - window)
        best = max(best, prefix[i + 1] - prefix[first])
    return best


def per_window(times: list[float], window: float, windows: int) -> list[int]:
    """Grants in consecutive windows starting at the first grant."""
    start = min(times)
    counts = [0] * windows
    for t in times:
        index = int((t - start) // window)
        if index < windows:
            counts[index] += 1
    return counts


async def take_grants(limiter: RateLimiter, seconds: float, tokens: int = 1) -> list[float]:
    """Acquire as fast as the limiter allows for `seconds`; the grant times (Redis's clock)."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while True:
        try:
            grant = await asyncio.wait_for(limiter.acquire(tokens), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return times
        assert grant.mode == "shared"
        times.append(grant.at)


def limiter_process(url: str, api_key: str, limits: dict[str, Any], seconds: float, ready: Any, go: Any,
                    out: Any) -> None:
    """Another agent pod: its own interpreter and connection, the same API key."""

    async def run() -> list[float]:
        redis = connect(url)
        assert redis is not None
        limiter = RateLimiter(redis, api_key, **limits)
        await redis.ping()
        ready.put(True)
        await asyncio.to_thread(go.wait)
        try:
            return await take_grants(limiter, seconds)
        finally:
            await redis.aclose()

    out.put(asyncio.run(run()))


async def test_pods_together_get_the_whole_request_budget_and_never_more(redis_server: RedisServer) -> None:
    limit, seconds, processes, tasks = 50, 4.3, 3, 8
    limits = {"requests_per_minute": limit, "tokens_per_minute": 10**9, "window_seconds": WINDOW}
    api_key = unique("sk-ant")
    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=limiter_process, args=(redis_server.url, api_key, limits, seconds, ready, go, out))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    clients = [connect(redis_server.url) for _ in range(tasks)]
    try:
        for _ in workers:
            await asyncio.to_thread(ready.get, True, 30)
        limiters = [RateLimiter(client, api_key, **limits) for client in clients]
        go.set()
        results = await asyncio.gather(*(take_grants(limiter, seconds) for limiter in limiters))
        results += [await asyncio.to_thread(out.get, True, 30) for _ in workers]
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.join, 10)
            if worker.is_alive():
                worker.kill()
        for client in clients:
            await client.aclose()

    times = [t for result in results for t in result]
    assert all(results), "every client and process got grants"
    assert most_in_any_window(times, WINDOW) <= limit
    windows = per_window(times, WINDOW, 4)
    assert all(count >= 0.95 * limit for count in windows), windows
    print(f"\nrequests per window: {windows} (limit {limit}), achieved {sum(windows) / (4 * limit):.1%}; "
          f"per client {min(map(len, results))}-{max(map(len, results))}")


async def test_settled_usage_frees_tokens_for_later_requests(redis_server: RedisServer) -> None:
    estimate, actual, token_limit, seconds = 100, 25, 1000, 3.2
    api_key = unique("sk-ant")
    clients = [connect(redis_server.url) for _ in range(4)]
    spent: list[tuple[float, int]] = []

    async def agent(limiter: RateLimiter) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                grant = await asyncio.wait_for(limiter.acquire(estimate), deadline - time.monotonic())
            except asyncio.TimeoutError:
                return
            assert grant.mode == "shared"
            spent.append((grant.at, actual))
            await limiter.settle(estimate, actual)

    try:
        await asyncio.gather(*(agent(RateLimiter(client, api_key, requests_per_minute=10**6,
                                                 tokens_per_minute=token_limit, window_seconds=WINDOW))
                               for client in clients))
    finally:
        for client in clients:
            await client.aclose()

    times = [t for t, _ in spent]
    assert most_in_any_window(times, WINDOW, [n for _, n in spent]) <= token_limit
    unsettled_capacity = 3 * token_limit // estimate  # what three windows would allow on estimates alone
    assert sum(per_window(times, WINDOW, 3)) >= 2 * unsettled_capacity


async def test_settle_returns_unused_tokens_and_charges_overuse(redis_server: RedisServer) -> None:
    window = 0.5
    redis = connect(redis_server.url)
    try:
        limiter = RateLimiter(redis, unique("sk-ant"), requests_per_minute=100, tokens_per_minute=100,
                              window_seconds=window)
        started = time.monotonic()
        await limiter.acquire(60)
        await limiter.settle(60, 20)
        await limiter.acquire(80)  # 20 + 80 fit: no wait
        assert time.monotonic() - started < 0.2
        await limiter.acquire(1)  # waits for the first grant to leave the window
        assert time.monotonic() - started >= window * 0.9

        overused = RateLimiter(redis, unique("sk-ant"), requests_per_minute=100, tokens_per_minute=100,
                               window_seconds=window)
        started = time.monotonic()
        grant = await overused.acquire(10)
        await overused.settle(10, 100, grant)
        await overused.acquire(1)
        assert time.monotonic() - started >= window * 0.9
        assert overused.mode == "shared"
    finally:
        await redis.aclose()


async def test_the_api_key_never_reaches_redis(redis_server: RedisServer) -> None:
    api_key = unique("sk-ant-secret")
    redis = connect(redis_server.url)
    try:
        limiter = RateLimiter(redis, api_key, requests_per_minute=10, tokens_per_minute=1000, window_seconds=WINDOW)
        await limiter.settle(5, 3, await limiter.acquire(5))
        keys = await redis.keys(f"overseer:ratelimit:*{limiter.key_hash}*")
        assert len(keys) == 3
        for key in keys:
            assert api_key not in key
            dump = await redis.dump(key)
            assert api_key.encode() not in dump
    finally:
        await redis.aclose()


async def test_limiter_falls_back_to_local_limits_while_redis_is_down(redis_server: RedisServer) -> None:
    limit, peers = 20, 2
    redis = connect(redis_server.url)
    limiter = RateLimiter(redis, unique("sk-ant"), requests_per_minute=limit, tokens_per_minute=10**9,
                          window_seconds=WINDOW, expected_peers=peers, retry_seconds=0.3)
    try:
        assert (await limiter.acquire(1)).mode == "shared"
        with redis_down(redis_server):
            local: list[float] = []
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:
                grant = await limiter.acquire(1)
                assert grant.mode == "local" and limiter.mode == "local"
                local.append(grant.at)
            assert most_in_any_window(local, WINDOW) <= limit // peers
            assert len(local) >= 1.5 * limit // peers

            redis_server.start()

            async def shared_again() -> bool:
                return (await limiter.acquire(1)).mode == "shared"

            await eventually(shared_again, what="the limiter uses Redis again")
            assert limiter.mode == "shared"
    finally:
        await redis.aclose()


async def test_without_redis_everything_works_locally() -> None:
    assert connect("") is None and connect(None) is None
    limiter = RateLimiter(None, "sk-ant", requests_per_minute=2, tokens_per_minute=100, window_seconds=WINDOW)
    assert (await limiter.acquire(10)).mode == "local" and limiter.mode == "local"
    stream = EventStream(None, "team-a", "fix-ci")
    await stream.publish({"type": EventType.TURN, "data": {"n": 1}})
    assert stream.buffered == 0 and [e async for e in stream.follow()] == []
    assert await SteeringQueue(None, "team-a", "fix-ci").drain() == []


async def test_a_silent_redis_does_not_hang_the_agent() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        redis = connect(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", connect_timeout=0.2, timeout=0.3)
        try:
            limiter = RateLimiter(redis, "sk-ant", requests_per_minute=10, tokens_per_minute=1000,
                                  window_seconds=WINDOW)
            stream = EventStream(redis, "team-a", "fix-ci")
            steering = SteeringQueue(redis, "team-a", "fix-ci")
            started = time.monotonic()
            assert (await limiter.acquire(1)).mode == "local"
            await stream.publish({"type": EventType.TURN, "data": {}})
            assert await steering.drain() == []
            assert time.monotonic() - started < 1.5
            started = time.monotonic()  # known to be down now: no more waiting on timeouts
            for _ in range(5):
                await limiter.acquire(1)
                await stream.publish({"type": EventType.TURN, "data": {}})
                assert await steering.drain() == []
            assert time.monotonic() - started < 0.1
            assert stream.buffered == 6
        finally:
            await redis.aclose()


async def test_follow_reads_from_the_start_or_only_new_events_and_stops_at_end(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    followers = [connect(redis_server.url), connect(redis_server.url)]
    goal = unique("fix-ci")
    stream = EventStream(redis, "team-a", goal)
    try:
        await stream.publish({"type": EventType.TURN, "data": {"turn": 1, "text": "Looking at the CI log"}})
        await stream.publish({"type": EventType.TOOL_CALL, "data": {"tool": "bash", "input": {"command": "make"}}})

        async def collect(redis_client: Any, from_start: bool) -> list[dict[str, Any]]:
            return [event async for event in EventStream(redis_client, "team-a", goal).follow(from_start)]

        everything = asyncio.create_task(collect(followers[0], True))
        tail = asyncio.create_task(collect(followers[1], False))

        async def both_waiting() -> bool:
            return (await redis.info("clients"))["blocked_clients"] >= 2

        await eventually(both_waiting, what="both followers wait for new events")
        await stream.publish({"type": EventType.TOOL_RESULT, "data": {"tool": "bash", "output": "ok"}})
        await stream.publish({"type": EventType.PHASE, "phase": "Succeeded"})
        await stream.publish({"type": EventType.END, "data": {"reason": "done"}})
        everything_seen, tail_seen = await asyncio.wait_for(asyncio.gather(everything, tail), 5)

        assert [e["type"] for e in everything_seen] == ["turn", "tool_call", "tool_result", "phase", "end"]
        assert [e["type"] for e in tail_seen] == ["tool_result", "phase", "end"]
        assert tail_seen == everything_seen[2:]
        assert everything_seen[1]["data"] == {"tool": "bash", "input": {"command": "make"}}
        assert everything_seen[3]["data"] == {"phase": "Succeeded"}
        assert all(e["ts"].endswith("Z") and e["id"] for e in everything_seen)

        # An ended goal: tailing ends at once, reading from the start replays it all.
        assert [e async for e in stream.follow()] == []
        assert [e async for e in stream.follow(from_start=True)] == everything_seen
    finally:
        for client in (redis, *followers):
            await client.aclose()


async def test_follow_stops_when_cancelled(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    try:
        stream = EventStream(redis, "team-a", unique("fix-ci"))
        follower = asyncio.create_task(anext(stream.follow(from_start=True)))

        async def waiting() -> bool:
            return (await redis.info("clients"))["blocked_clients"] >= 1

        await eventually(waiting, what="the follower waits for events")
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    finally:
        await redis.aclose()


async def test_events_published_while_redis_is_down_are_delivered_when_it_returns(
        redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    stream = EventStream(redis, "team-a", unique("fix-ci"), buffer_size=3, retry_seconds=0.2)
    try:
        await stream.publish({"type": EventType.TURN, "data": {"turn": 0}})
        with redis_down(redis_server):
            started = time.monotonic()
            for turn in range(1, 5):
                await stream.publish({"type": EventType.TURN, "data": {"turn": turn}})  # never raises
            assert time.monotonic() - started < 0.5
            # The buffer keeps the newest events; older ones are dropped and counted.
            assert (stream.buffered, stream.dropped) == (3, 1)

            redis_server.start()
            await eventually(stream.flush, what="the buffered events are delivered")

        assert stream.buffered == 0
        await stream.publish({"type": EventType.END, "data": {}})
        delivered = [event async for event in stream.follow(from_start=True)]
        # Redis came back empty (the test server keeps nothing on disk): what it holds is the buffer.
        assert [e["data"].get("turn") for e in delivered] == [2, 3, 4, None]
    finally:
        await redis.aclose()


async def test_a_goal_that_ends_around_a_redis_outage_still_delivers_its_end_event(
        redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    goal = unique("fix-ci")
    stream = EventStream(redis, "team-a", goal)  # the agent's retry period: 5 s
    steering = SteeringQueue(redis, "team-a", goal)
    try:
        # Two pooled connections, as the publisher and the steering poller leave them.
        await asyncio.gather(stream.publish({"type": EventType.TURN, "data": {"turn": 0}}), steering.drain())
        with redis_down(redis_server):
            await stream.publish({"type": EventType.TOOL_CALL, "data": {"turn": 1}})
            redis_server.start()
            # The goal ends right after Redis is back, inside the period in which publish does not
            # try Redis again: the end waits in memory, where the agent's exit would lose it.
            await stream.publish({"type": EventType.END, "data": {"success": True}})
            assert stream.buffered == 2
            started = time.monotonic()
            assert await stream.drain(timeout=10)
            assert time.monotonic() - started < 2.5  # retried every second, past a stale pooled connection
        delivered = [event async for event in stream.follow(from_start=True)]
        assert [(e["type"], e["data"].get("turn")) for e in delivered] == [("tool_call", 1), ("end", None)]
        assert await redis.ttl(stream.key) > 0  # an ended goal's stream expires
    finally:
        await redis.aclose()


async def test_draining_while_redis_stays_away_gives_up_after_its_timeout(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    stream = EventStream(redis, "team-a", unique("fix-ci"))
    try:
        with redis_down(redis_server):
            await stream.publish({"type": EventType.END, "data": {}})
            started = time.monotonic()
            assert not await stream.drain(timeout=1.5, interval=0.5)
            assert 1.4 < time.monotonic() - started < 2.5
            assert stream.buffered == 1
    finally:
        await redis.aclose()


async def test_events_published_while_one_is_in_flight_keep_the_newest_and_lose_none_unsaid(
        redis_server: RedisServer) -> None:
    gate = asyncio.Event()

    class SlowRedis(Redis):
        async def xadd(self, *args: Any, **kwargs: Any) -> Any:
            await gate.wait()  # a slow network: the first send is still on its way
            return await super().xadd(*args, **kwargs)

    redis = SlowRedis.from_url(redis_server.url, decode_responses=True)
    stream = EventStream(redis, "team-a", unique("fix-ci"), buffer_size=2)
    try:
        publishes = [asyncio.create_task(stream.publish({"type": EventType.TURN, "data": {"turn": 0}}))]
        await asyncio.sleep(0.05)
        for turn in range(1, 4):  # overflow the buffer while turn 0 is being sent
            publishes.append(asyncio.create_task(stream.publish({"type": EventType.TURN, "data": {"turn": turn}})))
            await asyncio.sleep(0)
        assert (stream.buffered, stream.dropped) == (2, 1)
        gate.set()
        await asyncio.gather(*publishes)
        await stream.publish({"type": EventType.END, "data": {}})
        delivered = [event async for event in stream.follow(from_start=True)]
        # Sent: the one in flight and the newest two; dropped and counted: turn 1.
        assert [e["data"].get("turn") for e in delivered] == [0, 2, 3, None]
        assert stream.dropped == 1
    finally:
        await redis.aclose()


async def test_steering_is_fifo_and_each_message_is_delivered_once(redis_server: RedisServer) -> None:
    goal, count = unique("fix-ci"), 300
    clients = [connect(redis_server.url) for _ in range(3)]
    sender, *readers = (SteeringQueue(client, "team-a", goal) for client in clients)
    try:
        await sender.push("run the tests first", "alice")
        await sender.push("then fix the linter", "bob")
        first = await readers[0].drain()
        assert [(m.text, m.author) for m in first] == [("run the tests first", "alice"), ("then fix the linter", "bob")]
        assert await readers[0].drain() == []

        received: list[list[int]] = [[], []]
        done = asyncio.Event()

        async def read(index: int) -> None:
            while not done.is_set():
                received[index] += [int(m.text) for m in await readers[index].drain()]
                if sum(map(len, received)) == count:
                    done.set()
                await asyncio.sleep(0)

        async def send() -> None:
            for n in range(count):
                await sender.push(str(n), "alice")

        await asyncio.wait_for(asyncio.gather(read(0), read(1), send()), 10)
        assert sorted(received[0] + received[1]) == list(range(count))
        assert all(r == sorted(r) for r in received)
        assert all(received), "both readers took part"
    finally:
        for client in clients:
            await client.aclose()


async def test_a_drain_whose_answer_was_lost_on_the_way_is_answered_again(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis ran the drain but its answer never reached the reader (a client timeout on a busy node):
    the messages it moved are answered by the next drain, once."""
    from redis.asyncio.connection import Connection

    redis = connect(redis_server.url)
    goal = unique("fix-ci")
    sender, reader = SteeringQueue(redis, "team-a", goal), SteeringQueue(redis, "team-a", goal, retry_seconds=0)
    try:
        assert await reader.drain() == []
        await sender.push("run the tests first", "alice")
        read_response = Connection.read_response

        async def answer_lost(self: Connection, *args: Any, **kwargs: Any) -> Any:
            await read_response(self, *args, **kwargs)
            raise TimeoutError("Timeout reading from 127.0.0.1")

        monkeypatch.setattr(Connection, "read_response", answer_lost)
        assert await reader.drain() == []  # the script ran; the answer was lost
        monkeypatch.setattr(Connection, "read_response", read_response)
        await sender.push("then fix the linter", "bob")
        assert [m.text for m in await reader.drain()] == ["run the tests first", "then fix the linter"]
        assert await reader.drain() == []
        await sender.push("stop", "alice")
        assert [m.text for m in await reader.drain()] == ["stop"]
    finally:
        await redis.aclose()


async def test_steering_while_redis_is_down(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    queue = SteeringQueue(redis, "team-a", unique("fix-ci"), retry_seconds=0.2)
    try:
        with redis_down(redis_server):
            started = time.monotonic()
            assert await queue.drain() == []
            assert await queue.drain() == []
            assert time.monotonic() - started < 0.5
            with pytest.raises(SteeringUnavailable, match="team-a/"):
                await queue.push("stop", "alice")
            redis_server.start()

        async def pushed() -> bool:
            with contextlib.suppress(SteeringUnavailable):
                await queue.push("stop", "alice")
                return True
            return False

        await eventually(pushed, what="the queue takes messages again")

        async def delivered() -> bool:
            return [m.text for m in await queue.drain()] == ["stop"]

        await eventually(delivered, what="the message is delivered")
    finally:
        await redis.aclose()


async def test_the_poller_takes_steering_off_redis_in_the_background(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    goal = unique("fix-ci")
    sender = SteeringQueue(redis, "team-a", goal)
    poller = SteeringPoller(SteeringQueue(redis, "team-a", goal, retry_seconds=0.1), interval=0.05)
    poller.start()
    try:
        assert await poller.take() == []
        await sender.push("run the tests first", "alice")
        await sender.push("then fix the linter", "bob")
        taken: list[str] = []

        async def both_taken() -> bool:
            taken.extend(await poller.take())
            return len(taken) == 2

        await eventually(both_taken, what="the poller drains the queue")
        assert taken == ["run the tests first", "then fix the linter"]
        assert await redis.llen(sender.key) == 0 and await poller.take() == []
    finally:
        await poller.stop()
        await redis.aclose()


async def test_after_a_redis_restart_a_publish_on_stale_pooled_connections_goes_through_at_once(
        redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    goal = unique("fix-ci")
    stream = EventStream(redis, "team-a", goal)  # the agent's retry period: 5 s
    steering = SteeringQueue(redis, "team-a", goal)
    try:
        # Pooled connections, as the publisher and the steering poller leave them.
        await asyncio.gather(*(stream.publish({"type": EventType.TURN, "data": {"turn": 0}}) for _ in range(3)),
                             steering.drain(), steering.drain())
        assert len(redis.connection_pool._available_connections) >= 2  # what the restart leaves stale
        redis_server.stop()
        redis_server.start()  # every pooled connection now leads to the old, dead server

        started = time.monotonic()
        for turn in range(1, 6):
            await stream.publish({"type": EventType.TURN, "data": {"turn": turn}})
            assert stream.buffered == 0, f"turn {turn} waits in memory"
        await stream.publish({"type": EventType.END, "data": {}})
        assert time.monotonic() - started < 1.0
        delivered = [event async for event in stream.follow(from_start=True)]
        assert [e["data"].get("turn") for e in delivered] == [1, 2, 3, 4, 5, None]
    finally:
        await redis.aclose()
