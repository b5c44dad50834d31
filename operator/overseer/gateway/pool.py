"""The one upstream client: keep-alive HTTP/1.1 connections to the model endpoints, shared by every
Agent and call, each an asyncio Protocol with llhttp (httptools) parsing the answer.

A streamed answer is relayed from the connection's read callback: each read of the model's
socket is written to the client as one chunk, in the same callback, so passing an event on wakes
no coroutine and the bytes are never re-chunked beyond what HTTP/1.1 needs. Proxies from the
environment are ignored: the gateway's egress is the model endpoint and nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .http import Connection
from .usage import StreamUsage

# Headers that describe the connection or the body's framing: the gateway frames its own answer.
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "transfer-encoding", "content-length"))


class UpstreamError(Exception):
    """The model endpoint could not be reached, or broke off before its answer's head."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a base URL's calls go."""

    key: tuple[str, str, int]  # (scheme, host, port): the connections that may be shared
    host_header: str
    prefix: str  # the base URL's own path, before /v1/...


class UpstreamPool:
    """At most `connections` connections in use at once; idle ones are kept `keepalive` seconds."""

    def __init__(self, connections: int, total_timeout: float, connect_timeout: float,
                 keepalive: float = 60) -> None:
        self._slots = asyncio.Semaphore(connections) if connections else None
        self._total = total_timeout
        self._connect = connect_timeout
        self._keepalive = keepalive
        self._idle: dict[tuple[str, str, int], list[Upstream]] = {}
        self._origins: dict[str, Origin] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def origin(self, base_url: str) -> Origin:
        found = self._origins.get(base_url)
        if found is None:
            url = urlsplit(base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise UpstreamError(f"{base_url!r} is not an http(s) URL")
            port = url.port or (443 if url.scheme == "https" else 80)
            default = port == (443 if url.scheme == "https" else 80)
            host = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"
            found = Origin((url.scheme, url.hostname, port), host if default else f"{host}:{port}",
                           url.path.rstrip("/"))
            if len(self._origins) < 4096:
                self._origins[base_url] = found
        return found

    async def call(self, base_url: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Upstream:
        """Send one POST; returns once the answer's head is in (`status`, `headers`). The caller
        must `release()` the connection when done with it."""
        origin = self.origin(base_url)
        if self._slots is not None:
            await self._slots.acquire()
        try:
            lines = [f"POST {origin.prefix}{path} HTTP/1.1", f"host: {origin.host_header}",
                     f"content-length: {len(body)}", "accept-encoding: identity"]
            lines += [f"{name}: {value}" for name, value in headers]
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
            for attempt in range(2):
                upstream = self._idle_connection(origin.key) if attempt == 0 else None
                reused = upstream is not None
                if upstream is None:
                    upstream = await self._open(origin)
                upstream.send(request, self._total)
                try:
                    await upstream.head
                    return upstream
                except UpstreamError:
                    upstream.discard()
                    # A kept-alive connection the server had closed while idle: once more on a new one.
                    if not reused or upstream.received:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    def _idle_connection(self, key: tuple[str, str, int]) -> Upstream | None:
        idle = self._idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle:
            upstream = idle.pop()
            if upstream.usable and now - upstream.idle_since < self._keepalive:
                return upstream
            upstream.close()
        return None

    async def _open(self, origin: Origin) -> Upstream:
        scheme, host, port = origin.key
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect):
                _, upstream = await loop.create_connection(lambda: Upstream(self, origin.key), host, port, ssl=tls,
                                                           server_hostname=host if tls else None)
        except (OSError, TimeoutError) as e:
            raise UpstreamError(f"{type(e).__name__}: {e}") from e
        return upstream

    def _released(self, upstream: Upstream) -> None:
        if self._slots is not None:
            self._slots.release()
        if upstream.usable and not self._closed:
            upstream.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(upstream.key, []).append(upstream)
        else:
            upstream.close()

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for upstream in idle:
                upstream.close()
        self._idle.clear()


class Upstream(asyncio.Protocol):
    """One connection to a model endpoint, carrying one call at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self._parser: httptools.HttpResponseParser | None = None
        self.transport: asyncio.Transport | None = None
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done: asyncio.Future[bool] | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.event_stream = False
        self._body: list[bytes] = []
        self._client: Connection | None = None
        self._tap: StreamUsage | None = None
        self._complete = False
        self._until_close = False
        self._keep_alive = False
        self._failure: Exception | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._released = False
        self.received = False
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        """Free for the next call: its last answer was read to the end on a kept-alive connection."""
        return (self._complete and self._keep_alive and self._failure is None and self.transport is not None
                and not self.transport.is_closing())

    def send(self, request: bytes, timeout: float) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.head = loop.create_future()
        self._done = None
        self.status, self.headers, self.event_stream, self._body = 0, [], False, []
        self._client = self._tap = None
        self._complete = self._until_close = self._keep_alive = self.received = self._released = False
        self._timer = loop.call_later(timeout, self._timed_out) if timeout else None
        self.transport.write(request)

    async def read(self) -> bytes:
        """The whole body of a non-streamed answer."""
        if not await self._finished():
            raise UpstreamError(f"the answer broke off: {self._failure!r}")
        return self._body[0] if len(self._body) == 1 else b"".join(self._body)

    async def relay(self, client: Connection, tap: StreamUsage) -> bool:
        """Pass the body on to `client` as it arrives, each read as one chunk, the last one with the
        end of the body; True when it came whole, False when it broke off (the client's answer
        is then incomplete too) or the client went away."""
        self._client, self._tap = client, tap
        client.feeder = self
        try:
            if self._body or self._complete:
                self._pass_on()
            return await self._finished()
        finally:
            self._client = client.feeder = None
            if client.transport is not None and not client.closed and client.transport.get_write_buffer_size() == 0:
                self.resume_reading()

    def release(self) -> None:
        """Done with this call: back to the pool when the answer was read to its end, else closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._released:
            self._released = True
            self._pool._released(self)

    def discard(self) -> None:
        """Closed without going back to the pool (its slot stays with the caller)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._released = True
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _finished(self) -> asyncio.Future[bool]:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self._complete or self._failure is not None:
                self._done.set_result(self._failure is None)
        return self._done

    def _pass_on(self) -> None:
        chunk = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        assert self._tap is not None and self._client is not None
        self._tap.feed(chunk)
        self._client.write_chunk(chunk, last=self._complete)
        if self._complete:
            self._client = None  # its answer is whole

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError("the model endpoint's answer took longer than the upstream timeout"))

    def _fail(self, failure: Exception) -> None:
        if self._failure is None and not self._complete:
            self._failure = failure
            if not self.head.done():
                self.head.set_exception(UpstreamError(str(failure)))
                self.head.exception()  # retrieved: call() may already have stopped waiting
            if self._done is not None and not self._done.done():
                self._done.set_result(False)
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._parser is None:
            self._fail(ConnectionError("the model endpoint sent bytes nobody asked for"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"the model endpoint's answer is not valid HTTP: {e}"))
            return
        if self._client is not None and (self._body or self._complete):
            self._pass_on()
        if self._complete and self._done is not None and not self._done.done():
            self._done.set_result(True)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and self._until_close and self.head.done() and self._failure is None:
            self._complete = True  # an answer without a length ends where the connection does
            if self._client is not None:
                self._pass_on()
            if self._done is not None and not self._done.done():
                self._done.set_result(True)
        if not self._complete:
            self._fail(exc or ConnectionResetError("the model endpoint closed the connection"))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.transport.is_reading():
            self.transport.resume_reading()

    def client_gone(self) -> None:
        self._fail(ConnectionResetError("the client went away"))

    # llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:
            self.headers = []  # an interim answer: the real head follows
            return
        self.event_stream = any(n.lower() == "content-type" and v.startswith("text/event-stream")
                                for n, v in self.headers)
        framed = any(n.lower() in ("content-length", "transfer-encoding") for n, _ in self.headers)
        self._until_close = not framed and self.status not in (204, 304)
        self.headers = [(n, v) for n, v in self.headers if n.lower() not in _HOP_BY_HOP]
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
