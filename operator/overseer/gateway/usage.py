"""The usage of one model answer, read from a JSON message or from server-sent events as they
pass through (the stream is forwarded untouched; only two event kinds are decoded)."""

from __future__ import annotations

from typing import Any

import orjson

_USAGE_EVENTS = (b"message_start", b"message_delta")


class StreamUsage:
    """Feed it the bytes of an event stream; `usage` is the answer's usage so far."""

    __slots__ = ("_pending", "usage", "model")

    def __init__(self) -> None:
        self._pending = b""
        self.usage: dict[str, Any] = {}
        self.model = ""

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        start = 0
        while (end := data.find(b"\n\n", start)) >= 0:
            head = data[start:start + 40]
            if _USAGE_EVENTS[0] in head or _USAGE_EVENTS[1] in head:
                self._read(data[start:end])
            start = end + 2
        self._pending = data[start:]

    def _read(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            event = orjson.loads(line[5:])
            if event.get("type") == "message_start":
                message = event.get("message") or {}
                self.model = message.get("model") or self.model
                self.usage = dict(message.get("usage") or {})
            elif event.get("type") == "message_delta":
                # message_delta carries cumulative counts; fields it leaves out keep their value.
                self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})


def message_usage(body: bytes) -> dict[str, Any]:
    """The usage of a non-streamed answer ({} when the body holds none)."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return dict(message.get("usage") or {}) if isinstance(message, dict) else {}
