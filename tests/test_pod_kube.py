"""The goal pod's Kubernetes client (httpx2) answers as the operator's (aiohttp) does: the same
objects, None for a missing one, the API server's Status in ApiError, one new login after a 401,
and a watch's events; both run here against one API server stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from overseer.agent.kube_client import PodKube
from overseer.kube import ApiError, Kube, StaticCredentials

GOAL = {"kind": "Goal", "metadata": {"name": "g", "namespace": "ns", "resourceVersion": "7"}}


class ApiServer:
    """Answers a few paths as the API server would; the second login's token is "fresh"."""

    def __init__(self) -> None:
        self.logins = 0
        self.seen: list[tuple[str, str, str, bytes]] = []  # method, path?query, Authorization, body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization", ""), body))
        if request.headers.get("Authorization") == "Bearer stale":
            return web.json_response({"kind": "Status", "reason": "Unauthorized", "message": "token expired"},
                                     status=401)
        if request.query.get("watch") == "true":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for kind in ("ADDED", "MODIFIED"):
                await resp.write(json.dumps({"type": kind, "object": GOAL}).encode() + b"\n\n")
            return resp
        if request.path.endswith("/goals/g"):
            return web.json_response(GOAL if request.method == "GET" else json.loads(body))
        if request.path.endswith("/goals/conflict"):
            return web.json_response({"kind": "Status", "reason": "Conflict", "message": "the object was modified"},
                                     status=409, headers={"Retry-After": "3"})
        if request.path.endswith("/goals/plain"):
            return web.Response(status=500, reason="Boom", text="not json")
        return web.json_response({"kind": "Status", "reason": "NotFound", "message": "not found"}, status=404)


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiServer, str]]:
    server = ApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def clients(api: tuple[ApiServer, str]) -> list[Kube]:
    server, url = api

    async def login() -> StaticCredentials:
        server.logins += 1
        return StaticCredentials(server=url, token="stale" if server.logins == 1 else "fresh", scheme="Bearer")

    return [Kube(login, "overseer-agent"), PodKube(login, "overseer-agent")]


async def answers(kube: Kube) -> list[Any]:
    out: list[Any] = [await kube.get("/apis/overseer.dev/v1alpha1/namespaces/ns/goals/g"),
                      await kube.get("/apis/overseer.dev/v1alpha1/namespaces/ns/goals/missing"),
                      await kube.merge_patch("/apis/overseer.dev/v1alpha1/namespaces/ns/goals/g", {"spec": {"x": 1}})]
    for name in ("conflict", "plain"):
        with pytest.raises(ApiError) as caught:
            await kube.request("GET", f"/apis/overseer.dev/v1alpha1/namespaces/ns/goals/{name}")
        e = caught.value
        out.append((e.status, e.reason, e.message, e.method, e.path, e.retry_after))
    events = kube.watch("/apis/overseer.dev/v1alpha1/namespaces/ns/goals", {"fieldSelector": "metadata.name=g"})
    out.append([event async for event in events])
    await kube.close()
    return out


async def test_the_pod_client_answers_as_the_operators_does(api: tuple[ApiServer, str]) -> None:
    server, _ = api
    results = []
    for kube in clients(api):
        server.logins, server.seen = 0, []
        results.append((await answers(kube), server.logins, [(m, p, a, b) for m, p, a, b in server.seen]))
    operator, pod = results
    assert pod == operator
    got, logins, seen = pod
    assert got[0] == GOAL and got[1] is None and got[2] == {"spec": {"x": 1}}
    assert got[3] == (409, "Conflict", "the object was modified", "GET",
                      "/apis/overseer.dev/v1alpha1/namespaces/ns/goals/conflict", 3.0)
    assert got[4][:3] == (500, "Boom", "not json")
    assert got[5] == [{"type": "ADDED", "object": GOAL}, {"type": "MODIFIED", "object": GOAL}]
    assert logins == 2, "the 401 of the stale token is followed by one new login"
    assert seen[0][2] == "Bearer stale" and all(auth == "Bearer fresh" for _, _, auth, _ in seen[1:])
    assert ("PATCH", "/apis/overseer.dev/v1alpha1/namespaces/ns/goals/g?fieldManager=overseer-agent", "Bearer fresh",
            b'{"spec":{"x":1}}') in seen
    assert seen[-1][1].startswith("/apis/overseer.dev/v1alpha1/namespaces/ns/goals?watch=true&allowWatchBookmarks=true")
