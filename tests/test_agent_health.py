"""The goal pod's /healthz and /metrics."""

from __future__ import annotations

import socket

import aiohttp

from overseer.agent.health import HealthServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_healthz_follows_progress_and_metrics_show_the_iteration() -> None:
    iteration = 0
    port = free_port()
    server = HealthServer(port, stale_after=0.3)
    await server.start(lambda: iteration)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            iteration = 7
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert "overseer_agent_iteration 7.0" in await resp.text()
            server._last = (iteration, server._last[1] - 1.0)  # no progress for a second
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 503 and "no progress" in await resp.text()
    finally:
        await server.stop()


def test_a_pod_without_progress_reports_it_and_refuses_other_paths() -> None:
    server = HealthServer(0, stale_after=60)
    assert server.answer("GET", "/healthz")[0] == 200
    assert server.answer("GET", "/nothing")[0] == 404
    assert server.answer("POST", "/healthz")[0] == 405
    server._last = (0, server._last[1] - 61)
    assert server.answer("GET", "/healthz?verbose")[:1] == (503,)
