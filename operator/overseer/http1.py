"""A lean HTTP/1.1 client for the API server: short requests over keep-alive connections (asyncio
streams, one request at a time on each), and each watch on a connection of its own.

aiohttp spent about three times the CPU of this on each request (its request and response
objects, URL handling, cookie jar, tracing hooks and timers), and the operator makes two requests
per goal it dispatches. Everything the API server's JSON answers need is here: Content-Length and
chunked bodies, keep-alive and `Connection: close`, TLS with the cluster's CA and client
certificates.

Watches get a connection of their own, read by a Protocol: llhttp (httptools) takes the chunks
apart and each event is decoded in the read callback, so a read that brings many events wakes the
informer once, where aiohttp's stream took a coroutine step, a line search and a timer move per
event. A reader that falls behind pauses the socket instead of buffering without end.

Errors are aiohttp's connection errors and TimeoutError, so callers handle them as before.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import httptools
import orjson

HEAD_LIMIT = 1 << 20  # a response's status line and headers; the API server's are a few hundred bytes
NO_BODY = {204, 304}
WATCH_BACKLOG = 5000  # events decoded but not yet taken: past this, reading pauses until they are


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Up to `size` requests at once to one server, over connections kept open between them."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext | bool, headers: dict[str, str], size: int,
                 timeout: float = 60.0) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API server {server!r}: expected http(s)://host[:port][/prefix]")
        self.host, self.port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            if isinstance(ssl_context, ssl.SSLContext):
                self.ssl = ssl_context
            elif ssl_context is False:  # insecure: no verification, as aiohttp's ssl=False
                self.ssl = ssl.create_default_context()
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
            else:
                self.ssl = ssl.create_default_context()
        netloc = url.netloc.rsplit("@", 1)[-1]
        # Sent with every request: formatted once.
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": netloc, **headers}.items())
        self.timeout = timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                      params: dict[str, str] | None = None) -> Response:
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        head = f"{method} {target} HTTP/1.1\r\n{self._head}"
        if body is not None:
            head += f"Content-Type: {content_type or 'application/json'}\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        async with self._slots:
            async with asyncio.timeout(self.timeout):
                while True:
                    conn, reused = (self._idle.pop(), True) if self._idle else (await self._open(), False)
                    try:
                        response, keep = await self._exchange(conn, data, method)
                    except _Stale:
                        conn.close()
                        if reused:
                            continue  # the server closed it while idle: once more on a new connection
                        raise aiohttp.ServerDisconnectedError() from None
                    except BaseException:
                        conn.close()
                        raise
                    if keep and not self._closed:
                        self._idle.append(conn)
                    else:
                        conn.close()
                    return response

    async def watch(self, path: str, params: dict[str, str], read_seconds: float) -> Watch:
        """Start a watch on a connection of its own; the answer's head is in when this returns."""
        target = self.prefix + path + "?" + urlencode(params)
        data = f"GET {target} HTTP/1.1\r\n{self._head}\r\n".encode("latin-1")
        loop = asyncio.get_running_loop()
        stream = Watch(loop, read_seconds)
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    await loop.create_connection(lambda: stream, self.host, self.port, ssl=self.ssl,
                                                 server_hostname=self.host if self.ssl else None)
                except OSError as e:
                    raise aiohttp.ClientOSError(e.errno, f"cannot connect to {self.host}:{self.port}: {e}") from e
                stream.send(data)
                await stream.head
        except BaseException:
            stream.close()
            raise
        return stream

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None,
                limit=HEAD_LIMIT)
        except OSError as e:  # refused, unreachable, or TLS refused (ssl.SSLError)
            raise aiohttp.ClientOSError(e.errno, f"cannot connect to {self.host}:{self.port}: {e}") from e
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, data: bytes, method: str) -> tuple[Response, bool]:
        """Send one request and read its answer; whether the connection may carry another."""
        reader = conn.reader
        try:
            conn.writer.write(data)
            await conn.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise _Stale() from None  # closed before a byte of the answer: nothing was done twice
            raise aiohttp.ServerDisconnectedError() from None
        except (ConnectionResetError, BrokenPipeError):
            raise _Stale() from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        try:
            status = int(code)
        except ValueError:
            raise aiohttp.ClientResponseError(None, (), message=f"not an HTTP answer: {lines[0][:80]!r}") from None  # type: ignore[arg-type]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        try:
            if method == "HEAD" or status in NO_BODY or 100 <= status < 200:
                body = b""
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = await self._chunked(reader)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body, keep = await reader.read(), False  # the body ends with the connection
        except asyncio.IncompleteReadError:
            raise aiohttp.ServerDisconnectedError() from None
        return Response(status, reason, headers, body), keep

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Stale(Exception):
    """A kept-alive connection the server had closed."""


class Watch(asyncio.Protocol):
    """One watch's answer: its status and headers, then its events in the order sent, taken in
    batches (whatever arrived since the last take)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_seconds: float) -> None:
        self._loop = loop
        self._read_seconds = read_seconds
        self._parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}  # names in lower case
        self._transport: asyncio.Transport | None = None
        self._partial = b""  # the start of a line whose end has not arrived
        self._events: list[Any] = []
        self._error_body: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # the server ended the answer
        self._failure: BaseException | None = None
        self._paused = False

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, ValueError) as e:  # ValueError: an event orjson cannot read
            self._fail(aiohttp.ClientPayloadError(f"watch answer unreadable: {e}"))
            self.close()
        if len(self._events) >= WATCH_BACKLOG and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._ended:
            self._fail(aiohttp.ServerDisconnectedError() if exc is None else
                       aiohttp.ClientOSError(getattr(exc, "errno", None) or 0, f"watch connection lost: {exc}"))
        self._wake()

    # ---- httptools callbacks ------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.status >= 300:
            self._error_body.append(body)
            return
        lines = (self._partial + body if self._partial else body).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self._events.append(orjson.loads(line))

    def on_message_complete(self) -> None:
        if self._partial.strip() and self.status < 300:
            self._events.append(orjson.loads(self._partial))
        self._partial = b""
        self._ended = True
        self.close()  # a watch's connection carries nothing after it

    # ---- the reader's side --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise aiohttp.ServerDisconnectedError()
        self._transport.write(data)

    async def events(self) -> list[Any] | None:
        """The events that arrived since the last call, waiting up to the read timeout for one;
        None once the server has ended the watch."""
        while not self._events:
            if self._failure is not None:
                raise self._failure
            if self._ended:
                return None
            async with asyncio.timeout(self._read_seconds):  # silent this long: a dead connection
                await self._next_read()
        events, self._events = self._events, []
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return events

    async def body(self) -> bytes:
        """The whole body of an answer that is not a watch (an error's Status)."""
        async with asyncio.timeout(self._read_seconds):
            while not self._ended and self._failure is None:
                await self._next_read()
        return b"".join(self._error_body)

    async def _next_read(self) -> None:
        """Until the connection next brings data, ends or fails."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # a reader that gave up waiting for the head need not hear of it

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
