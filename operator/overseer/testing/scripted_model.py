"""A local server speaking the Anthropic Messages API, whose answers come from a script.

It stands in for the model in tests, the offline demo and benchmarks: the real `anthropic`
SDK reaches it through `base_url`. Embedded::

    async with ScriptedModelServer(scenario) as server:
        client = anthropic.AsyncAnthropic(base_url=server.url, api_key="test")
        ...
        server.requests  # every request received, with its conversation key

or from a shell: `overseer-scripted-model --scenario FILE [--host 127.0.0.1] [--port N]`.

Endpoints: `POST /v1/messages` (JSON or `stream: true` server-sent events, in the event order
the real API uses) and `POST /v1/messages/count_tokens`. Errors use the API's JSON shape
and every response carries a `request-id` header.

Scenario (YAML, a dict, or `Scenario.from_turns` / `Scenario.tool_loop`)::

    conversations:
      team-a/fix-ci:            # the request's metadata.user_id; "default" serves every other key
        - expect: {last_user_contains: "Make tests pass"}
          reply:
            - text: "Reading the parser."
            - tool_use: {name: read_file, input: {path: src/parser.py}}   # optional id: toolu_...
        - fault: {status: 429, retry_after: 1}
        - reply: [{text: "All tests pass."}]   # `reply: "All tests pass."` and `- "All tests pass."` too
          stop_reason: end_turn                # optional: max_tokens, refusal, ...
          delay: 0.2                           # seconds before answering
          event_interval: 0.05                 # seconds between streamed events, as tokens are generated
    repeat_last: false   # when a script runs out, repeat its last turn
    loop: false          # ... or start it again; with neither, answer "scripted conversation finished"
    follow_history: false  # pick the reply by the request's history instead (see below)
    faults: {every: 5, status: 529}           # or a list: every Nth /v1/messages request, any conversation

Each conversation key keeps its own place in its script; a key without a script of its own
walks the "default" script from the start. Every `/v1/messages` request consumes one turn.
With `follow_history: true` the place is read from the request instead: a request whose
messages hold k assistant turns gets the k-th reply turn, and each fault turn fires once, the
first time its place is reached. A client that resumes from a checkpoint and asks again gets
the same answer, as from a real model.
- `expect` (optional, on any turn): `last_user_contains` (text and tool_result text of the last
  user message), `system_contains`, `tools_include` (tool names). A mismatch answers 400
  naming the conversation, turn and text, is appended to `ScriptedModelServer.mismatches`,
  and leaves the turn pending.
- `reply`: text and tool_use blocks. stop_reason is `tool_use` when the reply calls a tool,
  else `end_turn`, unless the turn sets it. The scripted reply is sent whatever max_tokens says.
- `fault`: the turn answers an error instead, so the reply after it answers the retry.
  Keys: `status` (429 rate_limit_error, 529 overloaded_error, 500 api_error, 400
  invalid_request_error, ...), `retry_after` (seconds: `retry-after` rounded up, plus
  `retry-after-ms` when fractional, which the SDK prefers), `type`, `message`, `delay`, and
  `drop_after_events: N`, which closes the connection after N events of the next reply (a
  non-streaming request gets no answer at all).

Token counting is a deterministic approximation used for usage and count_tokens alike:
a text block counts ceil(len(text) / 4), any other block (tool definition, tool_use,
tool_result, image) ceil(len(compact JSON without cache_control) / 4), and each message adds
MESSAGE_OVERHEAD tokens. output_tokens counts reply text, and tool_use input JSON, the same way.

Prompt caching follows the real API. The prompt is tools, then system, then messages, as a
sequence of blocks; a block with `cache_control` is a breakpoint (at most 4), and a cache
entry is keyed by (API key, model, hash of the exact prefix through that block). For each
breakpoint, the block boundaries from it back to 20 blocks before it are checked for a live
entry; the longest hit gives cache_read_input_tokens and has its lifetime refreshed. The
tokens from there to the last breakpoint are cache_creation_input_tokens and each such
breakpoint prefix becomes an entry (`ttl: 1h` lives an hour, otherwise 5 minutes); the
rest are input_tokens. A prefix shorter than 1024 tokens (2048 when the model name contains
"haiku") is never cached.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import secrets
import signal
import socket
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

MESSAGE_OVERHEAD = 3
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
FINISHED_TEXT = "scripted conversation finished"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}
STOP_REASONS = {"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"}
_TTLS = {"5m": 300.0, "1h": 3600.0}
_ID_ALPHABET = string.ascii_letters + string.digits


class ScenarioError(ValueError):
    """A scenario that cannot be played; the message names the offending place."""


@dataclass(frozen=True)
class Fault:
    """An error answer instead of a reply."""

    status: int = 500
    retry_after: float | None = None
    message: str | None = None
    error_type: str | None = None
    drop_after_events: int | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Turn:
    """One scripted answer: reply blocks or a fault, with optional expectations and latency."""

    reply: tuple[dict[str, Any], ...] = ()
    stop_reason: str | None = None
    delay: float = 0.0
    event_interval: float = 0.0
    expect: Mapping[str, Any] | None = None
    fault: Fault | None = None


@dataclass(frozen=True)
class Scenario:
    """What the model answers, turn by turn, for each conversation key."""

    conversations: Mapping[str, tuple[Turn, ...]]
    repeat_last: bool = False
    loop: bool = False
    faults: tuple[tuple[int, Fault], ...] = ()  # (every, fault)
    follow_history: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """A scenario from its YAML shape (see the module docstring)."""
        _known(data, {"conversations", "repeat_last", "loop", "faults", "follow_history"}, "scenario")
        raw = data.get("conversations") or {}
        if not isinstance(raw, Mapping):
            raise ScenarioError("scenario conversations: expected a mapping of conversation key to turns")
        raw_faults = data.get("faults") or []
        faults = []
        for i, spec in enumerate([raw_faults] if isinstance(raw_faults, Mapping) else raw_faults):
            where = f"scenario faults[{i}]"
            every = spec.get("every") if isinstance(spec, Mapping) else None
            if not isinstance(every, int) or every < 1:
                raise ScenarioError(f"{where}.every: expected a positive integer")
            faults.append((every, _fault({k: v for k, v in spec.items() if k != "every"}, where)))
        return cls(
            conversations={str(key): tuple(_turn(t, f"conversations.{key}[{i}]") for i, t in enumerate(turns))
                           for key, turns in raw.items()},
            repeat_last=bool(data.get("repeat_last", False)),
            loop=bool(data.get("loop", False)),
            faults=tuple(faults),
            follow_history=bool(data.get("follow_history", False)),
        )

    @classmethod
    def from_yaml(cls, text: str) -> Scenario:
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        return cls.from_yaml(Path(path).read_text())

    @classmethod
    def from_turns(cls, conversations: Mapping[str, Sequence[Turn | Mapping[str, Any] | str]],
                   **options: Any) -> Scenario:
        """A scenario from conversation key -> turns (Turn objects or their YAML shape)."""
        scenario = cls.from_dict({"conversations": {}, **options})
        turns = {str(key): tuple(t if isinstance(t, Turn) else _turn(t, f"conversations.{key}[{i}]")
                                 for i, t in enumerate(items))
                 for key, items in conversations.items()}
        return cls(turns, scenario.repeat_last, scenario.loop, scenario.faults, scenario.follow_history)

    @classmethod
    def tool_loop(cls, turns: int = 50, tool: str = "noop", input: Mapping[str, Any] | None = None,
                  conversation: str = "default", **options: Any) -> Scenario:
        """`turns` turns for benchmarks: each calls `tool` with `input`, the last ends the conversation."""
        call = Turn(reply=({"type": "tool_use", "name": tool, "input": dict(input or {})},))
        done = Turn(reply=({"type": "text", "text": f"Done after {turns - 1} calls to {tool}."},))
        return cls.from_turns({conversation: [call] * (turns - 1) + [done]}, **options)

    @classmethod
    def coerce(cls, value: Scenario | Mapping[str, Any] | str | Path) -> Scenario:
        if isinstance(value, Scenario):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return cls.load(value)

    def script_for(self, conversation: str) -> tuple[Turn, ...] | None:
        return self.conversations.get(conversation, self.conversations.get("default"))

    def turn_index(self, length: int, cursor: int) -> int | None:
        """Which turn answers the request at `cursor`; None once the script is finished."""
        if cursor < length:
            return cursor
        if length and self.loop:
            return cursor % length
        if length and self.repeat_last:
            return length - 1
        return None


def _known(data: Any, keys: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where}: expected a mapping, got {data!r}")
    unknown = set(data) - keys
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(keys)}")


def _fault(data: Any, where: str) -> Fault:
    _known(data, {"status", "retry_after", "message", "type", "drop_after_events", "delay"}, where)
    retry_after, drop = data.get("retry_after"), data.get("drop_after_events")
    return Fault(status=int(data.get("status", 500)), retry_after=None if retry_after is None else float(retry_after),
                 message=data.get("message"), error_type=data.get("type"),
                 drop_after_events=None if drop is None else int(drop), delay=float(data.get("delay", 0)))


def _reply_block(data: Any, where: str) -> dict[str, Any]:
    if isinstance(data, str):
        return {"type": "text", "text": data}
    _known(data, {"text", "tool_use"}, where)
    if len(data) != 1:
        raise ScenarioError(f"{where}: expected exactly one of text or tool_use")
    if "text" in data:
        return {"type": "text", "text": str(data["text"])}
    call = data["tool_use"]
    _known(call, {"name", "input", "id"}, f"{where}.tool_use")
    if "name" not in call:
        raise ScenarioError(f"{where}.tool_use.name: required")
    return {"type": "tool_use", "name": call["name"], "input": call.get("input") or {},
            **({"id": call["id"]} if "id" in call else {})}


def _turn(data: Any, where: str) -> Turn:
    if isinstance(data, str):
        data = {"reply": data}
    _known(data, {"reply", "fault", "expect", "stop_reason", "delay", "event_interval"}, where)
    if ("reply" in data) == ("fault" in data):
        raise ScenarioError(f"{where}: expected exactly one of reply or fault")
    if data.get("stop_reason") not in STOP_REASONS | {None}:
        raise ScenarioError(f"{where}.stop_reason: expected one of {sorted(STOP_REASONS)}")
    expect = data.get("expect")
    if expect is not None:
        _known(expect, {"last_user_contains", "system_contains", "tools_include"}, f"{where}.expect")
    reply = data.get("reply")
    blocks = [reply] if isinstance(reply, str) else (reply or [])
    return Turn(reply=tuple(_reply_block(b, f"{where}.reply[{i}]") for i, b in enumerate(blocks)),
                stop_reason=data.get("stop_reason"), delay=float(data.get("delay", 0)),
                event_interval=float(data.get("event_interval", 0)), expect=expect,
                fault=_fault(data["fault"], f"{where}.fault") if "fault" in data else None)


# Token counting and prompt caching


def _canonical(block: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def block_tokens(block: Mapping[str, Any]) -> int:
    """Approximate tokens of one content block, tool definition or system block."""
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return math.ceil(len(block["text"]) / 4)
    return math.ceil(len(_canonical(block)) / 4)


@dataclass(frozen=True)
class PromptBlock:
    """One block of a prompt, as far as token counts and caching are concerned."""

    tokens: int
    prefix_hash: bytes  # of every block up to and including this one
    cache_ttl: float | None  # seconds, when the block carries cache_control


def _as_blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []


def prompt_blocks(body: Mapping[str, Any]) -> list[PromptBlock]:
    """The prompt as the API sees it for caching: tools, then system, then messages."""
    items: list[tuple[str, Mapping[str, Any], int]] = []
    items += [("tool", tool, block_tokens(tool)) for tool in body.get("tools") or [] if isinstance(tool, Mapping)]
    items += [("system", b, block_tokens(b)) for b in _as_blocks(body.get("system") or [])]
    for message in body.get("messages") or []:
        blocks = _as_blocks(message.get("content")) or [{"type": "text", "text": ""}]
        for i, block in enumerate(blocks):
            tag = message.get("role", "?") + ("+" if i == 0 else "")  # "+" starts a new message
            items.append((tag, block, block_tokens(block) + (MESSAGE_OVERHEAD if i == 0 else 0)))
    digest, out = hashlib.sha256(), []
    for tag, block, tokens in items:
        digest.update(f"{tag}\x00{_canonical(block)}\x00".encode())
        control = block.get("cache_control")
        ttl = _TTLS.get(control.get("ttl", "5m"), 300.0) if isinstance(control, Mapping) else None
        out.append(PromptBlock(tokens, digest.digest(), ttl))
    return out


def count_tokens(body: Mapping[str, Any]) -> int:
    """The input tokens of a request, as count_tokens reports them."""
    return sum(b.tokens for b in prompt_blocks(body))


def minimum_cacheable_tokens(model: str) -> int:
    """The shortest prefix the model caches."""
    return 2048 if "haiku" in model.lower() else 1024


class PromptCache:
    """Cache entries keyed by (API key, model, prefix hash), with the real API's accounting."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str, bytes], tuple[float, float]] = {}  # -> (expires, ttl)

    def account(self, api_key: str, model: str, blocks: Sequence[PromptBlock]) -> dict[str, Any]:
        """The usage of a request's prompt; writes and refreshes entries as the API would."""
        now = self._clock()
        if len(self._entries) > 10_000:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        cumulative = list(accumulate(b.tokens for b in blocks))
        total = cumulative[-1] if cumulative else 0
        breakpoints = [i for i, b in enumerate(blocks) if b.cache_ttl is not None]
        hit = -1
        for point in breakpoints:
            for i in range(point, max(-1, point - LOOKBACK_BLOCKS), -1):
                entry = self._entries.get((api_key, model, blocks[i].prefix_hash))
                if entry and entry[0] > now:
                    hit = max(hit, i)
                    break
        read = cumulative[hit] if hit >= 0 else 0
        if hit >= 0:
            ttl = self._entries[(api_key, model, blocks[hit].prefix_hash)][1]
            self._entries[(api_key, model, blocks[hit].prefix_hash)] = (now + ttl, ttl)
        covered, created = read, {300.0: 0, 3600.0: 0}
        for point in breakpoints:
            if point <= hit or cumulative[point] < minimum_cacheable_tokens(model):
                continue
            ttl = blocks[point].cache_ttl or 300.0
            created[ttl] += cumulative[point] - covered
            covered = cumulative[point]
            self._entries[(api_key, model, blocks[point].prefix_hash)] = (now + ttl, ttl)
        return {
            "input_tokens": total - covered,
            "cache_creation_input_tokens": covered - read,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": created[300.0],
                               "ephemeral_1h_input_tokens": created[3600.0]},
        }


# Requests: validation and expectations


def _new_id(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def validation_error(body: Any, *, count_only: bool = False) -> str | None:
    """The API's complaint about a request body, or None when it is acceptable."""
    if not isinstance(body, Mapping):
        return "request body must be a JSON object"
    for name in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
    for i, message in enumerate(messages):
        blocks = _as_blocks(message["content"])
        uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        if message["role"] == "assistant" and uses and i + 1 < len(messages):
            answered = {b.get("tool_use_id") for b in _as_blocks(messages[i + 1].get("content"))
                        if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if missing:
                return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(map(str, missing))}. Each `tool_use` block must have a "
                        "corresponding `tool_result` block in the next message.")
        previous = messages[i - 1] if i > 0 and messages[i - 1].get("role") == "assistant" else {}
        offered = {b.get("id") for b in _as_blocks(previous.get("content")) if b.get("type") == "tool_use"}
        for j, block in enumerate(blocks):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in offered:
                return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message.")
    breakpoints = sum(1 for b in prompt_blocks(body) if b.cache_ttl is not None)
    if breakpoints > MAX_BREAKPOINTS:
        return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
    return None


def _text_of(content: Any) -> str:
    parts = []
    for block in _as_blocks(content):
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content") or ""))
    return "\n".join(parts)


def expectation_failures(expect: Mapping[str, Any], body: Mapping[str, Any]) -> list[str]:
    """What in `body` does not meet a turn's `expect`."""
    failures = []
    if "last_user_contains" in expect:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        text = _text_of(users[-1]["content"]) if users else ""
        if str(expect["last_user_contains"]) not in text:
            failures.append(f"expected the last user message to contain {expect['last_user_contains']!r}, "
                            f"got {text[:300]!r}")
    if "system_contains" in expect:
        system = _text_of(body.get("system") or "")
        if str(expect["system_contains"]) not in system:
            failures.append(f"expected the system prompt to contain {expect['system_contains']!r}, "
                            f"got {system[:300]!r}")
    if "tools_include" in expect:
        names = [t.get("name") for t in body.get("tools") or []]
        missing = [n for n in expect["tools_include"] if n not in names]
        if missing:
            failures.append(f"expected tools {missing} among the request's tools {names}")
    return failures


# Answers


def _output_tokens(content: Sequence[Mapping[str, Any]]) -> int:
    return sum(block_tokens(b) if b["type"] == "text" else math.ceil(len(json.dumps(b["input"])) / 4)
               for b in content)


def _pieces(text: str, count: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / count))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def stream_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A complete message as the server-sent events of a streamed answer."""
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**message["usage"], "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        else:
            opening = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": piece}
                      for piece in ["", *_pieces(json.dumps(block["input"]))]]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": opening}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                   for delta in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": message["usage"]}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def error_response(status: int, message: str, error_type: str | None = None,
                   retry_after: float | None = None) -> web.Response:
    """An error in the API's JSON shape."""
    request_id = _new_id("req_")
    headers = {"request-id": request_id}
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        if retry_after != math.ceil(retry_after):
            headers["retry-after-ms"] = str(round(retry_after * 1000))
    body = {"type": "error", "request_id": request_id,
            "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    path: str
    conversation: str
    body: Any
    api_key: str = ""
    status: int = 200  # 0 when the connection was dropped
    turn: int | None = None  # index of the scripted turn that answered it


@dataclass
class _Answer:
    turn: Turn | None
    index: int | None
    upcoming: Turn | None = None  # the reply a dropped stream starts to send


RECORD = web.RequestKey("record", RecordedRequest)


class ScriptedModelServer:
    """The scripted Messages API on 127.0.0.1; `async with` starts it on a free port."""

    def __init__(self, scenario: Scenario | Mapping[str, Any] | str | Path, *, host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.monotonic, access_log: bool = False,
                 record_to: str | Path | None = None) -> None:
        self.scenario = Scenario.coerce(scenario)
        self.host, self.port = host, port
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.mismatches: list[str] = []
        self.cache = PromptCache(clock)
        self._cursors: dict[str, int] = {}
        self._fired: dict[str, set[int]] = {}  # fault turns already fired (follow_history)
        self._served = 0
        self._access_log = access_log
        self._record_to = Path(record_to) if record_to else None
        self._runner: web.AppRunner | None = None

    def requests_for(self, conversation: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.conversation == conversation]

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        kwargs: dict[str, Any] = {} if self._access_log else {"access_log": None}
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, **kwargs)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"
        return self.url

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        """With record_to, every request goes to that JSON-lines file once answered (for other
        processes, such as tests, to read)."""
        response = await handler(request)
        record = request.get(RECORD)
        if self._record_to is not None and record is not None:
            with open(self._record_to, "a") as f:
                f.write(json.dumps({"path": record.path, "conversation": record.conversation, "body": record.body,
                                    "status": record.status, "turn": record.turn,
                                    "api_key": record.api_key}) + "\n")  # whose key: the gateway's or a pod's
        return response

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ScriptedModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read(self, request: web.Request) -> tuple[RecordedRequest, web.Response | None]:
        try:
            body: Any = await request.json()
        except ValueError:
            body = await request.text()
        metadata = body.get("metadata") if isinstance(body, Mapping) else None
        user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        record = RecordedRequest(request.path, str(user_id or "default"), body,
                                 api_key=request.headers.get("x-api-key") or bearer)
        self.requests.append(record)
        request[RECORD] = record
        if not record.api_key:
            return record, error_response(401, "x-api-key header is required")
        problem = ("request body is not valid JSON" if isinstance(body, str)
                   else validation_error(body, count_only=request.path.endswith("count_tokens")))
        return record, error_response(400, problem) if problem else None

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        record, refusal = await self._read(request)
        response = refusal or web.json_response({"input_tokens": count_tokens(record.body)},
                                                headers={"request-id": _new_id("req_")})
        record.status = response.status
        return response

    def _next_answer(self, record: RecordedRequest) -> _Answer | web.Response:
        script = self.scenario.script_for(record.conversation)
        if script is None:
            return error_response(400, f"no scripted conversation for metadata.user_id {record.conversation!r} "
                                       f"and no 'default' one; the scenario has {sorted(self.scenario.conversations)}")
        if self.scenario.follow_history:
            cursor = self._history_cursor(record, script)
        else:
            cursor = self._cursors.get(record.conversation, 0)
        index = self.scenario.turn_index(len(script), cursor)
        if index is None:
            return _Answer(None, None)
        turn = script[index]
        failures = expectation_failures(turn.expect, record.body) if turn.expect else []
        if failures:
            text = f"conversation {record.conversation!r} turn {index}: " + "; ".join(failures)
            self.mismatches.append(text)
            return error_response(400, text)
        self._cursors[record.conversation] = cursor + 1
        upcoming = None
        if turn.fault is not None:
            following = self.scenario.turn_index(len(script), cursor + 1)
            upcoming = script[following] if following is not None else None
        return _Answer(turn, index, upcoming)

    def _history_cursor(self, record: RecordedRequest, script: Sequence[Turn]) -> int:
        """The script position for a request that holds k assistant turns: the k-th reply turn,
        or an earlier fault turn on the way to it that has not fired yet."""
        done = sum(1 for m in record.body.get("messages") or [] if isinstance(m, Mapping)
                   and m.get("role") == "assistant")
        fired = self._fired.setdefault(record.conversation, set())
        replies = 0
        for i, turn in enumerate(script):
            if turn.fault is not None:
                if replies == done and i not in fired:
                    fired.add(i)
                    return i
                continue
            if replies == done:
                return i
            replies += 1
        return len(script) + max(0, done - replies)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        record, refusal = await self._read(request)
        answer: _Answer | web.Response
        if refusal is not None:
            answer = refusal
        else:
            self._served += 1
            storm = next((f for every, f in self.scenario.faults if self._served % every == 0), None)
            answer = _Answer(Turn(fault=storm), None) if storm else self._next_answer(record)
        if isinstance(answer, web.Response):
            record.status = answer.status
            return answer
        record.turn = answer.index
        fault = answer.turn.fault if answer.turn else None
        if fault is not None and fault.drop_after_events is None:
            record.status = fault.status
            await asyncio.sleep(fault.delay)
            return error_response(fault.status, fault.message or f"scripted {fault.status} error",
                                  fault.error_type, fault.retry_after)
        turn = answer.upcoming if fault is not None else answer.turn
        if turn is None or turn.fault is not None:
            turn = Turn(reply=({"type": "text", "text": FINISHED_TEXT},))
        message = self._message(record, turn)
        streamed = bool(record.body.get("stream"))
        if fault is not None:  # drop the connection part way
            record.status = 0
            await asyncio.sleep(fault.delay)
            events = stream_events(message)[:fault.drop_after_events] if streamed else []
            response = await self._send_events(request, events) if streamed else web.Response()
            if request.transport is not None:
                request.transport.abort()
            return response
        await asyncio.sleep(turn.delay)
        if streamed:
            return await self._send_events(request, stream_events(message), turn.event_interval)
        if turn.event_interval:  # a whole answer arrives when its stream would have ended
            await asyncio.sleep(turn.event_interval * (len(stream_events(message)) - 1))
        return web.json_response(message, headers={"request-id": _new_id("req_")})

    @staticmethod
    async def _send_events(request: web.Request, events: Sequence[tuple[str, Any]],
                           interval: float = 0.0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                               "cache-control": "no-cache", "request-id": _new_id("req_")})
        await response.prepare(request)
        for i, (name, data) in enumerate(events):
            if interval and i:
                await asyncio.sleep(interval)
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        return response

    def _message(self, record: RecordedRequest, turn: Turn) -> dict[str, Any]:
        content = [{"type": "text", "text": b["text"]} if b["type"] == "text"
                   else {"type": "tool_use", "id": b.get("id") or _new_id("toolu_"), "name": b["name"],
                         "input": b["input"]}
                   for b in turn.reply]
        usage = self.cache.account(record.api_key, str(record.body["model"]), prompt_blocks(record.body))
        calls_tool = any(b["type"] == "tool_use" for b in content)
        return {"id": _new_id("msg_"), "type": "message", "role": "assistant", "model": record.body["model"],
                "content": content, "stop_reason": turn.stop_reason or ("tool_use" if calls_tool else "end_turn"),
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": _output_tokens(content), "service_tier": "standard"}}

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(404, f"Not found: {request.method} {request.path}")


async def _serve(scenario: Scenario, source: str, host: str, port: int, record_to: str | None) -> None:
    async with ScriptedModelServer(scenario, host=host, port=port, access_log=True, record_to=record_to) as server:
        print(f"listening on {server.url}", flush=True)
        print(f"answers are scripted by {source}; this is not a real model", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry: serve a scenario file until interrupted."""
    parser = argparse.ArgumentParser(prog="overseer-scripted-model",
                                     description="A local Anthropic Messages API whose answers are scripted.")
    parser.add_argument("--scenario", required=True, help="scenario YAML file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    parser.add_argument("--log-requests", metavar="FILE", help="append every request, answered, to this JSON-lines file")
    args = parser.parse_args(argv)
    try:
        scenario = Scenario.load(args.scenario)
    except (OSError, yaml.YAMLError, ScenarioError) as err:
        parser.exit(2, f"overseer-scripted-model: {args.scenario}: {err}\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(_serve(scenario, args.scenario, args.host, args.port, args.log_requests))


if __name__ == "__main__":
    main()
