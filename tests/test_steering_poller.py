"""The agent's background steering poller, against a queue whose drain the test holds open."""

from __future__ import annotations

import asyncio

from overseer.live import SteeringMessage, SteeringPoller


class HeldQueue:
    """A steering queue whose next drain waits until the test releases it with messages."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    async def drain(self) -> list[SteeringMessage]:
        self.entered.set()
        texts = await self.release
        self.release = asyncio.get_running_loop().create_future()
        return [SteeringMessage(text=t, author="alice", ts="") for t in texts]


async def test_messages_drained_while_the_loop_takes_are_kept_for_the_next_take() -> None:
    queue = HeldQueue()
    poller = SteeringPoller(queue, interval=0.01)  # type: ignore[arg-type]
    poller.start()
    try:
        await queue.entered.wait()
        assert await poller.take() == []  # the loop takes while the drain is still waiting on Redis
        queue.entered.clear()
        queue.release.set_result(["run the tests first", "then fix the linter"])
        await queue.entered.wait()  # the next drain has begun: the first one is stored
        assert await poller.take() == ["run the tests first", "then fix the linter"]
        assert await poller.take() == []
    finally:
        await poller.stop()
