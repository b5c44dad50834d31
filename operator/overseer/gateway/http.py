"""The gateway's HTTP/1.1 server: an asyncio Protocol with llhttp (httptools) parsing requests.

The gateway serves four routes and passes streams through; a web framework's request machinery
(routing, middlewares, header multidicts, a payload stream per request) was a quarter of its CPU
per call. Here a request is parsed in the loop's read callback, handed to the handler whole, and
a stream is written straight from the upstream connection's read callback (`Connection.write_chunk`),
so an event passed on wakes no coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import httptools

log = logging.getLogger(__name__)

_REASONS = {s.value: s.phrase for s in HTTPStatus} | {529: "Overloaded"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024  # the request line and headers: llhttp itself sets no limit
IDLE_SECONDS = 60.0  # a kept-alive connection with no request in it is closed after this
REQUEST_SECONDS = 60.0  # from a request's first byte to its last: a client trickling it in is cut off


class _HeadTooLarge(Exception):
    pass


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names in lower case
    body: bytes
    connection: Connection


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# A handler answers with a Response, or None when it wrote the answer itself (a stream).
Handler = Callable[[Request], Awaitable[Response | None]]


class Feeder(Protocol):
    """What writes into a connection from elsewhere (an upstream stream): paused while the client is slow."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def client_gone(self) -> None: ...


class Server:
    """Serves `handler` on host:port until `close`."""

    def __init__(self, handler: Handler, max_body: int, error: Callable[[int, str], Response],
                 idle_seconds: float = IDLE_SECONDS, request_seconds: float = REQUEST_SECONDS) -> None:
        self.handler = handler
        self.error = error  # the answer to a request the handler never sees (malformed, too large)
        self.max_body = max_body
        # Neither bounds an answer in progress: a streamed answer lasts as long as the model takes.
        self.idle_seconds = idle_seconds
        self.request_seconds = request_seconds
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self, timeout: float = 30) -> None:
        """Stop accepting; close idle connections now and the others once their answer is out
        (at most `timeout` seconds)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()


class Connection(asyncio.Protocol):
    """One client connection: requests one at a time (keep-alive, pipelined ones queued). A
    connection left idle, or a request that does not arrive whole in time, is closed: clients that
    open connections and send nothing, or trickle a request in, do not hold the gateway's sockets."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False
        self.feeder: Feeder | None = None
        self._queue: deque[tuple[Request | None, bool]] = deque()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._chunked = False  # the answer in progress went out as chunks
        self._timer: asyncio.TimerHandle | None = None  # the idle or the request deadline, when one runs

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self._server.connections.add(self)
        self._deadline(self._server.idle_seconds, self._idle_over)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not served")
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, _HeadTooLarge):
                self._refuse(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")
            else:
                self._refuse(400, f"malformed HTTP request: {e}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._deadline(None)
        self._server.connections.discard(self)
        if self.feeder is not None:
            self.feeder.client_gone()

    def pause_writing(self) -> None:
        if self.feeder is not None:
            self.feeder.pause_reading()

    def resume_writing(self) -> None:
        if self.feeder is not None:
            self.feeder.resume_reading()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._head_size = b"", {}, [], 0, 0
        if not self.busy:
            self._deadline(self._server.request_seconds, self._request_over)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= self._server.max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        if self._size > self._server.max_body:
            request = None  # answered 413, then the connection is closed
        else:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            path = self._url.split(b"?", 1)[0].decode("latin-1")
            request = Request(self._parser.get_method().decode("latin-1"), path, self._headers, body, self)
        self._queue.append((request, keep_alive))
        self._deadline(None)
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())

    # answering

    async def _serve(self) -> None:
        while self._queue and not self.closed:
            request, keep_alive = self._queue.popleft()
            keep_alive = keep_alive and not self._server.closing
            if request is None:
                self.send(self._server.error(413, f"request body over {self._server.max_body} bytes"), keep_alive=False)
                break
            self._chunked = False
            try:
                answer = await self._server.handler(request)
            except Exception:
                log.exception("%s %s failed", request.method, request.path)
                if self._chunked:
                    self.abort()  # its answer had begun: break it off rather than end it cleanly
                    break
                answer = self._server.error(500, "the gateway failed on this request; see its log")
                keep_alive = False
            if answer is not None:
                self.send(answer, keep_alive)
            if not keep_alive:
                self.close()
                break
        self.busy = False
        if self._server.closing:
            self.close()
        elif not self.closed:
            self._deadline(self._server.idle_seconds, self._idle_over)

    def send(self, response: Response, keep_alive: bool = True) -> None:
        """A whole answer in one write."""
        if self.transport is None or self.closed:
            return
        head = _head(response.status, response.headers)
        head.append(f"content-length: {len(response.body)}")
        if not keep_alive:
            head.append("connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)

    def start_chunks(self, status: int, headers: list[tuple[str, str]]) -> None:
        """The head of an answer whose body follows in chunks (write_chunk, then end_chunks or abort)."""
        if self.transport is None or self.closed:
            return
        self._chunked = True
        head = _head(status, headers)
        head.append("transfer-encoding: chunked")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    def write_chunk(self, data: bytes, last: bool = False) -> None:
        """One chunk (and the end of the body when `last`) in one write."""
        if self.transport is None or self.closed:
            return
        if data:
            self.transport.write(b"%x\r\n%b\r\n%b" % (len(data), data, _LAST_CHUNK if last else b""))
        elif last:
            self.transport.write(_LAST_CHUNK)

    def abort(self) -> None:
        """Break the connection: the client sees an incomplete answer, as it would from the model."""
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _deadline(self, seconds: float | None, then: Callable[[], None] | None = None) -> None:
        """Run `then` in `seconds` unless called again first (None: no deadline)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds is not None and then is not None:
            self._timer = asyncio.get_running_loop().call_later(seconds, then)

    def _idle_over(self) -> None:
        self._timer = None
        if not self.busy:
            self.close()

    def _request_over(self) -> None:
        self._timer = None
        if not self.busy:  # a request that began while another was answered waits its turn
            self._refuse(408, f"the request did not arrive whole within {self._server.request_seconds:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self.send(self._server.error(status, message), keep_alive=False)
        self.close()


def _head(status: int, headers: list[tuple[str, str]]) -> list[str]:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return lines
