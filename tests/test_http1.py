"""The API client's requests, against a server that answers with exactly the bytes given: every
framing of an answer the API server uses, connections it closes, its errors, and TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from overseer.kube import ApiError, Kube, StaticCredentials

Answer = Callable[[bytes, int], bytes]  # (request head and body, request number on this connection) -> answer


class Server:
    """Reads each request (head and Content-Length body) and writes the answer `answer` makes;
    after it, closes the connection when `close_after` says so."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer, self.close_after = answer, close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writer.write(self.answer(request, n))
                await writer.drain()
                n += 1
                if self.close_after:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


async def serve(server: Server, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    return srv, srv.sockets[0].getsockname()[1]


@pytest.fixture
async def kube_for() -> AsyncIterator[Callable[..., Kube]]:
    made: list[Kube] = []

    def make(port: int, scheme: str = "http", **creds: object) -> Kube:
        async def login() -> StaticCredentials:
            return StaticCredentials(server=f"{scheme}://127.0.0.1:{port}", token="t0k3n", **creds)  # type: ignore[arg-type]
        made.append(Kube(login, "overseer-operator"))
        return made[-1]

    yield make
    for kube in made:
        await kube.close()


def ok(body: object, extra: str = "") -> bytes:
    data = orjson.dumps(body)
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(data)}\r\n\r\n".encode() + data


async def test_a_request_carries_method_path_query_credentials_and_body(kube_for: Callable[..., Kube]) -> None:
    server = Server(lambda req, n: ok({"kind": "Goal", "n": n}))
    srv, port = await serve(server)
    async with srv:
        kube = kube_for(port)
        answer = await kube.merge_patch("/apis/overseer.dev/v1alpha1/namespaces/team/goals/fix/status",
                                        {"status": {"phase": "Running"}})
        pods = await kube.request("GET", "/api/v1/namespaces/team/pods", params={"labelSelector": "overseer.dev/goal=fix"})
    assert answer == {"kind": "Goal", "n": 0} and pods == {"kind": "Goal", "n": 1}
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PATCH /apis/overseer.dev/v1alpha1/namespaces/team/goals/fix/status?fieldManager=overseer-operator HTTP/1.1"
    assert {"Authorization: Bearer t0k3n", "Content-Type: application/merge-patch+json", f"Host: 127.0.0.1:{port}",
            "Accept: application/json"} <= set(lines)
    assert orjson.loads(body) == {"status": {"phase": "Running"}}
    assert server.requests[1].startswith(b"GET /api/v1/namespaces/team/pods?labelSelector=overseer.dev%2Fgoal%3Dfix ")
    assert server.connections == 1  # kept alive: the second request rode the first one's connection


async def test_chunked_and_close_delimited_answers_are_read_whole(kube_for: Callable[..., Kube]) -> None:
    data = orjson.dumps({"items": [{"metadata": {"name": f"g-{i}"}} for i in range(300)]})
    chunks = [data[i:i + 1000] for i in range(0, len(data), 1000)]
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: 1\r\n\r\n")
    server = Server(lambda req, n: chunked)
    srv, port = await serve(server)
    async with srv:
        kube = kube_for(port)
        assert await kube.request("GET", "/api/v1/pods") == orjson.loads(data)
        assert await kube.request("GET", "/api/v1/pods") == orjson.loads(data)  # and the connection goes on
    assert server.connections == 1

    closing = Server(lambda req, n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + data, close_after=True)
    srv, port = await serve(closing)
    async with srv:
        kube = kube_for(port)
        assert await kube.request("GET", "/api/v1/pods") == orjson.loads(data)
        assert await kube.request("GET", "/api/v1/pods") == orjson.loads(data)
    assert closing.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced(kube_for: Callable[..., Kube]) -> None:
    # The server answers as if it kept the connection, then closes it: the next request finds it dead.
    server = Server(lambda req, n: ok({"ok": True}), close_after=True)
    srv, port = await serve(server)
    async with srv:
        kube = kube_for(port)
        for _ in range(3):
            assert await kube.request("GET", "/version") == {"ok": True}
            await asyncio.sleep(0.05)
    assert server.connections == 3 and len(server.requests) == 3  # each sent once, on a live connection


async def test_errors_name_the_status_the_message_and_retry_after(kube_for: Callable[..., Kube]) -> None:
    status = orjson.dumps({"kind": "Status", "reason": "TooManyRequests", "message": "please slow down"})

    def answer(req: bytes, n: int) -> bytes:
        if req.startswith(b"DELETE"):
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        return (f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: {len(status)}\r\n\r\n".encode()
                + status)

    srv, port = await serve(Server(answer))
    async with srv:
        kube = kube_for(port)
        with pytest.raises(ApiError) as e:
            await kube.create("/api/v1/namespaces/team/pods", {"metadata": {"name": "p"}})
        assert (e.value.status, e.value.reason, e.value.message, e.value.retry_after) == (
            429, "TooManyRequests", "please slow down", 3.0)
        assert await kube.delete("/api/v1/namespaces/team/pods/p") is False  # 404: already gone


async def test_an_expired_token_is_fetched_again_once(kube_for: Callable[..., Kube]) -> None:
    logins = []

    def answer(req: bytes, n: int) -> bytes:
        fresh = b"Bearer fresh" in req
        return ok({"ok": True}) if fresh else b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"

    srv, port = await serve(Server(answer))
    async with srv:
        async def login() -> StaticCredentials:
            logins.append(1)
            return StaticCredentials(server=f"http://127.0.0.1:{port}", token="fresh" if len(logins) > 1 else "old")
        kube = Kube(login, "overseer-operator")
        try:
            assert await kube.request("GET", "/version") == {"ok": True}
        finally:
            await kube.close()
    assert len(logins) == 2


async def test_an_unreachable_server_is_a_connection_error(kube_for: Callable[..., Kube]) -> None:
    srv, port = await serve(Server(lambda req, n: b""))
    srv.close()
    await srv.wait_closed()
    with pytest.raises(aiohttp.ClientConnectionError):  # what the informers, events and leader election catch
        await kube_for(port).request("GET", "/version")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    for name in ("server", "other"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / f"{name}.key"),
                        "-out", str(folder / f"{name}.crt")], check=True, capture_output=True)
    return {"crt": folder / "server.crt", "key": folder / "server.key", "other": folder / "other.crt"}


async def test_tls_trusts_the_clusters_ca_and_refuses_any_other(kube_for: Callable[..., Kube],
                                                                certs: dict[str, Path]) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs["crt"], certs["key"])
    srv, port = await serve(Server(lambda req, n: ok({"ok": True})), tls)
    async with srv:
        assert await kube_for(port, "https", ca_path=str(certs["crt"])).request("GET", "/version") == {"ok": True}
        with pytest.raises(aiohttp.ClientConnectionError):
            await kube_for(port, "https", ca_path=str(certs["other"])).request("GET", "/version")
        assert await kube_for(port, "https", insecure=True).request("GET", "/version") == {"ok": True}


def watch_answer(events: list[dict[str, object]], chunk: int, end: bool = True) -> bytes:
    """A watch's answer as the API server streams it: chunked, one JSON line per event, cut into
    chunks of `chunk` bytes wherever that falls (mid-line too)."""
    data = b"".join(orjson.dumps(e) + b"\n" for e in events)
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + (b"0\r\n\r\n" if end else b""))


def pod_events(n: int) -> list[dict[str, object]]:
    return [{"type": "MODIFIED", "object": {"metadata": {"name": f"p-{i}", "resourceVersion": str(i)},
                                            "status": {"phase": "Running", "note": "x" * (i % 700)}}}
            for i in range(n)]


async def collect(kube: Kube, params: dict[str, str] | None = None) -> list[dict[str, object]]:
    return [event async for event in kube.watch("/api/v1/namespaces/team/pods", params)]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
async def test_a_watch_yields_every_event_in_order_however_the_stream_is_cut(kube_for: Callable[..., Kube],
                                                                             chunk: int) -> None:
    events = pod_events(300)
    server = Server(lambda req, n: watch_answer(events, chunk), close_after=True)
    srv, port = await serve(server)
    async with srv:
        got = await collect(kube_for(port), {"resourceVersion": "7", "labelSelector": "overseer.dev/goal"})
    assert got == events
    line = server.requests[0].split(b"\r\n")[0].decode()
    assert line.startswith("GET /api/v1/namespaces/team/pods?watch=true&allowWatchBookmarks=true&resourceVersion=7&"
                           "labelSelector=overseer.dev%2Fgoal ")
    assert b"Authorization: Bearer t0k3n" in server.requests[0]


async def test_a_watch_the_server_cuts_off_is_a_connection_error_after_the_events_that_came(
        kube_for: Callable[..., Kube]) -> None:
    events = pod_events(5)
    srv, port = await serve(Server(lambda req, n: watch_answer(events, 50, end=False), close_after=True))
    got: list[dict[str, object]] = []
    async with srv:
        with pytest.raises(aiohttp.ClientConnectionError):
            async for event in kube_for(port).watch("/api/v1/pods"):
                got.append(event)
    assert got == events  # what arrived before the cut is not lost: the informer resumes after it


async def test_a_refused_watch_raises_the_api_servers_reason_message_and_retry_after(
        kube_for: Callable[..., Kube]) -> None:
    status = orjson.dumps({"kind": "Status", "reason": "Expired", "message": "too old resource version: 7 (90)"})
    answer = (b"HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nRetry-After: 3\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(status), status))
    srv, port = await serve(Server(lambda req, n: answer))
    async with srv:
        with pytest.raises(ApiError) as refused:
            await collect(kube_for(port))
    assert (refused.value.status, refused.value.reason, refused.value.retry_after) == (410, "Expired", 3.0)
    assert "too old resource version" in str(refused.value) and refused.value.method == "WATCH"


async def test_a_silent_watch_is_given_up_after_the_read_timeout(kube_for: Callable[..., Kube],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import overseer.kube
    monkeypatch.setattr(overseer.kube, "WATCH_READ_SECONDS", 0.3)
    # One event, then nothing, with the connection left open.
    srv, port = await serve(Server(lambda req, n: watch_answer(pod_events(1), 100, end=False)))
    got: list[dict[str, object]] = []
    async with srv:
        with pytest.raises(TimeoutError):
            async for event in kube_for(port).watch("/api/v1/pods"):
                got.append(event)
    assert len(got) == 1


async def test_a_reader_behind_the_stream_pauses_it_and_loses_nothing(kube_for: Callable[..., Kube],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import overseer.http1
    monkeypatch.setattr(overseer.http1, "WATCH_BACKLOG", 10)
    events = pod_events(2000)
    srv, port = await serve(Server(lambda req, n: watch_answer(events, 3000), close_after=True))
    got: list[dict[str, object]] = []
    async with srv:
        async for event in kube_for(port).watch("/api/v1/pods"):
            got.append(event)
            if len(got) % 100 == 0:
                await asyncio.sleep(0.001)  # a slow reader
    assert got == events
