"""A small async Kubernetes client, shared by the operator and the agent runtime.

Requests go over a lean keep-alive pool, watches over connections of their own read event by event
in the loop's read callback (http1.py; a goal pod's client carries both with httpx2:
overseer.agent.kube_client); bodies stay plain dicts: the official
client's model objects cost CPU and memory on the hot path for nothing Overseer needs. JSON
goes through orjson: decoding watch events and answers was a quarter of the operator's CPU
with the standard library's json. The official client is used only to find credentials
(kubeconfig or in-cluster), so every authentication method it knows works here too.
"""

from __future__ import annotations

import base64
import random
import ssl
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:  # imported when a pool is made: a goal pod's client (overseer.agent.kube_client) has none
    from .http1 import Pool


class Credentials(Protocol):
    """Where and how to reach the API server; kopf.ConnectionInfo (frozen) fits: read-only."""

    @property
    def server(self) -> str: ...
    @property
    def ca_path(self) -> Any: ...
    @property
    def ca_data(self) -> Any: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def scheme(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def certificate_path(self) -> Any: ...
    @property
    def certificate_data(self) -> Any: ...
    @property
    def private_key_path(self) -> Any: ...
    @property
    def private_key_data(self) -> Any: ...


@dataclass
class StaticCredentials:
    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool | None = None
    username: str | None = None
    password: str | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None


# A watch silent for this long is a dead connection: the server ends every watch sooner.
WATCH_READ_SECONDS = 330


def load_credentials() -> StaticCredentials:
    """Credentials from $KUBECONFIG (or ~/.kube/config) if present, else the pod's ServiceAccount."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_kube_config(client_configuration=cfg, persist_config=False)
    except config.ConfigException:
        config.load_incluster_config(client_configuration=cfg)
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    scheme, token = (auth.split(" ", 1) if auth and " " in auth else ("Bearer", auth))
    return StaticCredentials(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
        username=cfg.username or None, password=cfg.password or None,
    )


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status and message."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path
        self.retry_after = retry_after  # seconds the server asked to wait (429, 503), if it said


def api_error(status: int, reason: str, raw: bytes, method: str, url_path: str,
              headers: Mapping[str, str]) -> ApiError:
    """The ApiError of a non-2xx answer: the reason and message of its Status body when it has one."""
    text = raw.decode(errors="replace")
    try:
        body = orjson.loads(raw)
        reason, message = body.get("reason", ""), body.get("message", text)
    except (ValueError, AttributeError):
        message = text
    return ApiError(status, reason, message, method, url_path, retry_after(headers))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A Retry-After header in seconds (the API server sends whole seconds with 429 and 503)."""
    try:
        return float(headers.get("Retry-After") or headers["retry-after"])
    except (KeyError, ValueError):
        return None


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The REST path of a collection or object: path('v1', 'pods', 'ns', 'p') -> /api/v1/namespaces/ns/pods/p."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [root]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


_now_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The current second as Kubernetes writes timestamps (formatted once per second: a hot path)."""
    global _now_iso
    second = int(time.time())
    if _now_iso[0] != second:
        _now_iso = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _now_iso[1]


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as the API server's date-time format accepts it (fractions of a
    second, Z or an offset such as +02:00), as an aware datetime in UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:  # RFC 3339 always has one; a bare local time is read as UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def ssl_context(info: Credentials) -> ssl.SSLContext | bool:
    """The API server's CA alone when the credentials name one, as client-go trusts it (loading the
    system's store as well cost every process's start some 30 ms of CPU); else the system's store."""
    if info.insecure:
        return False
    data = None
    if not info.ca_path and info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        if "BEGIN CERTIFICATE" not in data:  # kubeconfigs carry it base64-encoded
            data = base64.b64decode(data).decode()
    ctx = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None, cadata=data)
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data or info.private_key_data:
        # ssl can only load client certificates from files.
        cert = _to_file(info.certificate_data) if info.certificate_data else cert
        key = _to_file(info.private_key_data) if info.private_key_data else key
    if cert:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
    return ctx


def _to_file(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        raw = base64.b64decode(raw)
    f = tempfile.NamedTemporaryFile(prefix="overseer-", suffix=".pem", delete=False)
    f.write(raw)
    f.close()
    return f.name


def request_headers(info: Credentials, user_agent: str) -> dict[str, str]:
    """The headers every request to the API server carries: who asks, and its credentials."""
    headers = {"User-Agent": user_agent, "Accept": "application/json"}
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
    return headers


class Backoff:
    """Delays between tries to reach the API server again: doubling up to `cap`, each drawn at random
    from its upper half. When an API server restarts, every informer and every goal pod loses its watch
    at the same instant; without the draw they would all come back in step, again and again."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    def next(self) -> float:
        delay = random.uniform(self.current / 2, self.current)
        self.current = min(self.cap, self.current * 2)
        return delay


class Kube:
    """Async REST calls to the API server with one shared connection pool."""

    def __init__(self, login: Callable[[], Awaitable[Credentials]], field_manager: str,
                 pool_size: int = 32) -> None:
        self._login = login
        self.field_manager = field_manager
        self._pool_size = pool_size
        self._pool: Pool | None = None
        self._server = ""

    async def _connect(self) -> Pool:
        from .http1 import Pool

        info = await self._login()
        if self._pool is not None:  # another request logged in meanwhile
            return self._pool
        self._server = info.server.rstrip("/")
        self._pool = Pool(self._server, ssl_context(info), request_headers(info, self.field_manager), self._pool_size)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def request(self, method: str, url_path: str, *, body: Any = None,
                      content_type: str = "application/json", params: dict[str, str] | None = None,
                      answer: bool = True) -> Any:
        """Send one request; return the decoded JSON answer (None with answer=False) or raise ApiError."""
        data = None if body is None else orjson.dumps(body)
        for attempt in (1, 2):
            status, reason, headers, raw = await self._send(method, url_path, data, content_type, params)
            if status == 401 and attempt == 1:
                # Credentials rotated (projected tokens expire): log in again once.
                await self.close()
                continue
            if status >= 300:
                raise api_error(status, reason, raw, method, url_path, headers)
            return orjson.loads(raw) if raw and answer else None
        raise AssertionError("unreachable")

    async def _send(self, method: str, url_path: str, data: bytes | None, content_type: str,
                    params: dict[str, str] | None) -> tuple[int, str, Mapping[str, str], bytes]:
        """One request as it went: status, reason, headers, body."""
        if self._pool is None:
            await self._connect()
        assert self._pool is not None
        resp = await self._pool.request(method, url_path, data, content_type, params)
        return resp.status, resp.reason, resp.headers, resp.body

    async def get(self, url_path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return await self.request("GET", url_path, params=params)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, url_path: str, body: dict[str, Any], answer: bool = True) -> dict[str, Any] | None:
        """Create; None if an object of that name already exists (creation is idempotent), or
        with answer=False (the created object is not decoded)."""
        try:
            return await self.request("POST", url_path, body=body, answer=answer)
        except ApiError as e:
            if e.status == 409 and e.reason == "AlreadyExists":
                return None
            raise

    async def apply(self, url_path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager: create or converge in one call."""
        return await self.request(
            "PATCH", url_path, body=body, content_type="application/apply-patch+yaml",
            params={"fieldManager": self.field_manager, "force": "true"},
        )

    async def merge_patch(self, url_path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch; None if the object is gone."""
        try:
            return await self.request("PATCH", url_path, body=body, content_type="application/merge-patch+json",
                                      params={"fieldManager": self.field_manager})
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def delete(self, url_path: str, propagation: str = "Background") -> bool:
        """Delete; False if it was already gone."""
        try:
            await self.request("DELETE", url_path, body={"propagationPolicy": propagation})
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise

    async def watch(self, url_path: str, params: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Watch events ({type, object}) of a collection until the server ends the stream."""
        pool = self._pool or await self._connect()
        query = {"watch": "true", "allowWatchBookmarks": "true", **(params or {})}
        stream = await pool.watch(url_path, query, WATCH_READ_SECONDS)
        try:
            if stream.status >= 300:
                raise api_error(stream.status, stream.reason, await stream.body(), "WATCH", url_path, stream.headers)
            while (events := await stream.events()) is not None:
                for event in events:
                    yield event
        finally:
            stream.close()
