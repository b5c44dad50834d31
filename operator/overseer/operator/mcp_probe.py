"""What an MCP server offers, asked once per Capability generation: the operator lists the
server's tools in a task of its own (never inside a reconcile) and the reconcile shows them
in status. The SDK is imported only when a first MCP Capability is probed."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any

from overseer import __version__
from overseer.api import Capability
from overseer.kube import path

from .runtime import Key, Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """One probe of a Capability's server: the tools it lists, or why there are none."""

    generation: int | None
    tools: list[str] | None
    error: str = ""
    at: float = 0.0


def tools_condition(cap: Capability, probe: Probe | None) -> tuple[str, str, str]:
    """(status, reason, message) of ToolsDiscovered."""
    assert cap.spec.mcp is not None
    url = cap.spec.mcp.url
    if probe is None:
        return "Unknown", "Probing", f"listing the tools of {url}"
    if probe.tools is None:
        return "False", "ServerUnreachable", (f"spec.mcp.url {url}: {probe.error}; goal pods get an error for each call "
                                              f"of its tools until it answers (tried again every few minutes)")
    absent = [t for t in cap.spec.mcp.tools if t not in probe.tools]
    if absent:
        return "False", "ToolNotOffered", (f"spec.mcp.tools names {', '.join(absent)}, which {url} does not list "
                                           f"(it lists {', '.join(probe.tools) or 'no tools'})")
    shown = offered_names(cap, probe.tools)
    return "True", "ToolsListed", f"{len(shown)} tools from {url}: {', '.join(shown)}"


def offered_names(cap: Capability, tools: list[str]) -> list[str]:
    """The listed tools that spec.mcp.tools lets agents use (all when it names none)."""
    assert cap.spec.mcp is not None
    return [t for t in tools if not cap.spec.mcp.tools or t in cap.spec.mcp.tools]


async def list_tools(url: str, headers: dict[str, str], timeout: float) -> list[str]:
    """The names of every tool the server lists, over one short session."""
    import httpx2
    import mcp_types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
    names: list[str] = []
    async with asyncio.timeout(timeout):
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout))
        info = mcp_types.Implementation(name="overseer-operator", version=__version__)
        async with http, Client(streamable_http_client(url, http_client=http), client_info=info,
                                read_timeout_seconds=timeout, cache=None) as client:
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
                if cursor is None:
                    return names


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Prober:
    """Probes in flight and their results, by Capability."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.results: dict[Key, Probe] = {}
        self._running: dict[Key, asyncio.Task[None]] = {}

    def result(self, key: Key, cap: Capability) -> Probe | None:
        """The probe of this generation of the Capability; starts one when there is none yet (or
        the last failed long enough ago). The reconcile is queued again when it ends."""
        probe = self.results.get(key)
        fresh = probe is not None and probe.generation == cap.generation
        retry = fresh and probe is not None and probe.tools is None and (
            time.monotonic() - probe.at >= self.rt.settings.mcp_probe_retry_seconds)
        if (not fresh or retry) and key not in self._running:
            self._running[key] = asyncio.create_task(self._probe(key, cap), name=f"probe {key[0]}/{key[1]}")
        return probe if fresh else None

    def forget(self, key: Key) -> None:
        self.results.pop(key, None)
        task = self._running.pop(key, None)
        if task is not None:
            task.cancel()

    async def _probe(self, key: Key, cap: Capability) -> None:
        assert cap.spec.mcp is not None
        try:
            headers = await self._headers(cap)
            tools: list[str] | None = await list_tools(cap.spec.mcp.url, headers,
                                                       self.rt.settings.mcp_probe_timeout_seconds)
            error = ""
        except Exception as exc:  # noqa: BLE001 - whatever failed is shown in the condition
            tools, error = None, _describe(exc)
        self.results[key] = Probe(cap.generation, tools, error, time.monotonic())
        self._running.pop(key, None)
        self.rt.capabilities.add(key)

    async def _headers(self, cap: Capability) -> dict[str, str]:
        assert cap.spec.mcp is not None
        out: dict[str, str] = {}
        for header in cap.spec.mcp.headers:
            if header.secret_key_ref is None:
                out[header.name] = header.value or ""
                continue
            ref = header.secret_key_ref
            secret: dict[str, Any] | None = await self.rt.kube.get(path("v1", "secrets", cap.namespace, ref.name))
            data = (secret or {}).get("data") or {}
            if ref.key not in data:
                raise LookupError(f"spec.mcp.headers {header.name}: Secret {ref.name!r} has no key {ref.key!r}"
                                  if secret else f"spec.mcp.headers {header.name}: Secret {ref.name!r} does not exist")
            out[header.name] = base64.b64decode(data[ref.key]).decode()
        return out
