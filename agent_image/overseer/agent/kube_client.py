"""The goal pod's Kubernetes client: overseer.kube.Kube carried by httpx2, the HTTP client the
model SDK loads anyway, instead of aiohttp. A goal pod then never imports aiohttp, whose import
alone (it builds two TLS contexts from the system's CA store) cost every goal's start some 0.1 s
of CPU. Same calls, same answers and errors (ApiError) as the operator's client."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import httpx2
import orjson

from overseer.kube import WATCH_READ_SECONDS, ApiError, Credentials, Kube, request_headers, retry_after, ssl_context


class PodKube(Kube):
    def __init__(self, login: Callable[[], Awaitable[Credentials]], field_manager: str, pool_size: int = 4) -> None:
        super().__init__(login, field_manager, pool_size)
        self._client: httpx2.AsyncClient | None = None

    async def _open(self) -> httpx2.AsyncClient:
        info = await self._login()
        headers = request_headers(info, self.field_manager)
        self._server = info.server.rstrip("/")
        plain = self._server.startswith("http://")
        self._client = httpx2.AsyncClient(
            # trust_env off, as aiohttp's session: no proxy from the environment between pod and API server
            verify=False if plain else ssl_context(info), headers=headers, trust_env=False,
            timeout=httpx2.Timeout(60.0),
            limits=httpx2.Limits(max_connections=self._pool_size, max_keepalive_connections=self._pool_size))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send(self, method: str, url_path: str, data: bytes | None, content_type: str,
                    params: dict[str, str] | None) -> tuple[int, str, Mapping[str, str], bytes]:
        client = self._client or await self._open()
        resp = await client.request(method, self._server + url_path, params=params, content=data,
                                    headers={"Content-Type": content_type} if data is not None else None)
        return resp.status_code, resp.reason_phrase, resp.headers, resp.content

    async def watch(self, url_path: str, params: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        client = self._client or await self._open()
        query = {"watch": "true", "allowWatchBookmarks": "true", **(params or {})}
        async with client.stream("GET", self._server + url_path, params=query,
                                 timeout=httpx2.Timeout(60.0, read=WATCH_READ_SECONDS)) as resp:
            if resp.status_code >= 300:
                raw = await resp.aread()
                raise ApiError(resp.status_code, resp.reason_phrase, raw.decode(errors="replace"), "WATCH", url_path,
                               retry_after(resp.headers))
            async for line in resp.aiter_lines():
                if line.strip():
                    yield orjson.loads(line)
