"""The scripted model server, as the real anthropic SDK sees it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from overseer.testing.scripted_model import (
    FINISHED_TEXT,
    MESSAGE_OVERHEAD,
    Scenario,
    ScenarioError,
    ScriptedModelServer,
)

MODEL = "claude-sonnet-5-5"
EPHEMERAL = {"type": "ephemeral"}
HELLO = [{"role": "user", "content": "Make tests pass"}]


@contextlib.asynccontextmanager
async def serving(scenario: Any, *, max_retries: int = 0, **kwargs: Any,
                  ) -> AsyncIterator[tuple[ScriptedModelServer, anthropic.AsyncAnthropic]]:
    """The server playing `scenario`, and an SDK client pointed at it."""
    async with ScriptedModelServer(scenario, **kwargs) as server:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=max_retries) as model:
            yield server, model


async def ask(model: anthropic.AsyncAnthropic, messages: list[dict[str, Any]] = HELLO, *,
              user: str | None = None, **kwargs: Any) -> anthropic.types.Message:
    """One request; `user` becomes metadata.user_id, the conversation key."""
    if user is not None:
        kwargs["metadata"] = {"user_id": user}
    return await model.messages.create(model=MODEL, max_tokens=1000, messages=messages, **kwargs)


def blocks_of(message: Any) -> list[dict[str, Any]]:
    """Content blocks as a request would send them back."""
    return [{"type": "text", "text": b.text} if b.type == "text"
            else {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
            for b in message.content]


# --- replies -----------------------------------------------------------------------------------------


async def test_a_text_reply_comes_back_as_a_message():
    async with serving({"conversations": {"default": ["All tests pass."]}}) as (server, model):
        message = await ask(model)

    assert message.content[0].text == "All tests pass."
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 4 + MESSAGE_OVERHEAD  # ceil(15 / 4) + overhead
    assert message.usage.output_tokens == 4
    assert [(r.path, r.conversation, r.status, r.turn) for r in server.requests] == [
        ("/v1/messages", "default", 200, 0)]


async def test_the_sync_client_gets_the_same_reply():
    async with serving(Scenario.from_turns({"default": ["Hello."]})) as (server, model):
        with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0) as sync:
            message = await asyncio.to_thread(sync.messages.create, model=MODEL, max_tokens=10, messages=HELLO)

    assert message.content[0].text == "Hello."


async def test_a_tool_call_round_trips_with_its_result():
    scenario = Scenario.from_turns({"default": [
        {"expect": {"last_user_contains": "Make tests pass", "tools_include": ["read_file"]},
         "reply": [{"text": "Reading the parser."},
                   {"tool_use": {"name": "read_file", "input": {"path": "src/parser.py"}}}]},
        {"expect": {"last_user_contains": "def parse"}, "reply": [{"text": "The parser is fine."}]},
    ]})
    tools = [{"name": "read_file", "description": "Read a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    async with serving(scenario) as (server, model):
        first = await ask(model, tools=tools)
        call = first.content[1]
        second = await ask(model, HELLO + [
            {"role": "assistant", "content": blocks_of(first)},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                          "content": "def parse(text): ..."}]},
        ], tools=tools)

    assert first.stop_reason == "tool_use"
    assert call.type == "tool_use" and call.id.startswith("toolu_")
    assert (call.name, call.input) == ("read_file", {"path": "src/parser.py"})
    assert second.stop_reason == "end_turn" and second.content[0].text == "The parser is fine."
    assert server.mismatches == []


async def test_a_tool_result_without_its_tool_use_is_refused():
    async with serving({"conversations": {"default": ["unused"]}}) as (server, model):
        with pytest.raises(anthropic.BadRequestError) as refused:
            await ask(model, HELLO + [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "x", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "?"}]},
            ])

    assert "messages.1: `tool_use` ids were found without `tool_result`" in str(refused.value)
    assert refused.value.body["error"]["type"] == "invalid_request_error"


async def test_a_tool_result_after_no_tool_use_is_refused():
    async with serving({"conversations": {"default": ["unused"]}}) as (server, model):
        with pytest.raises(anthropic.BadRequestError, match="messages.2.content.0: unexpected `tool_use_id`"):
            await ask(model, HELLO + [
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "?"}]},
            ])


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
async def test_a_request_without_a_required_field_is_refused(missing):
    body = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
    del body[missing]
    async with serving({"conversations": {"default": ["unused"]}}) as (server, model):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": "test"}) as reply:
                status, headers, error = reply.status, reply.headers, await reply.json()

    assert status == 400
    assert headers["request-id"].startswith("req_")
    assert error["type"] == "error"
    assert error["error"] == {"type": "invalid_request_error", "message": f"{missing}: Field required"}


async def test_streaming_gives_the_same_message_as_a_plain_request():
    turn = {"reply": [{"text": "Reading the parser now, then the tests."},
                      {"tool_use": {"id": "toolu_01fixed", "name": "read_file",
                                    "input": {"path": "src/parser.py", "lines": [1, 200], "why": "find the bug"}}}]}
    async with serving({"conversations": {"default": [turn]}, "repeat_last": True}) as (server, model):
        plain = await ask(model)
        async with model.messages.stream(model=MODEL, max_tokens=1000, messages=HELLO) as stream:
            streamed = await stream.get_final_message()
        async with await model.messages.create(model=MODEL, max_tokens=1000, messages=HELLO, stream=True) as raw:
            events = [event async for event in raw]

    assert blocks_of(streamed) == blocks_of(plain)
    assert streamed.stop_reason == plain.stop_reason == "tool_use"
    assert streamed.usage.model_dump() == plain.usage.model_dump()
    assert streamed.model == MODEL and streamed.id.startswith("msg_")
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    json_pieces = [e.delta.partial_json for e in events
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len([p for p in json_pieces if p]) > 1


async def test_count_tokens_counts_like_usage():
    messages = [{"role": "user", "content": "x" * 40}, {"role": "assistant", "content": "y" * 8},
                {"role": "user", "content": [{"type": "text", "text": "z" * 9}]}]
    async with serving({"conversations": {"default": ["ok"]}}) as (server, model):
        counted = await model.messages.count_tokens(model=MODEL, messages=messages, system="s" * 12)
        used = await ask(model, messages, system="s" * 12)

    assert counted.input_tokens == 10 + 2 + 3 + 3 * MESSAGE_OVERHEAD + 3
    assert used.usage.input_tokens == counted.input_tokens


async def test_a_finished_script_says_so_unless_told_to_repeat_or_loop():
    async def replies(**options: Any) -> list[str]:
        async with serving(Scenario.from_turns({"default": ["one", "two"]}, **options)) as (server, model):
            return [(await ask(model)).content[0].text for _ in range(3)]

    assert await replies() == ["one", "two", FINISHED_TEXT]
    assert await replies(repeat_last=True) == ["one", "two", "two"]
    assert await replies(loop=True) == ["one", "two", "one"]


async def test_a_turn_can_stop_for_max_tokens_or_refusal():
    scenario = Scenario.from_turns({"default": [{"reply": "cut", "stop_reason": "max_tokens"},
                                                {"reply": "no", "stop_reason": "refusal"}]})
    async with serving(scenario) as (server, model):
        assert (await ask(model)).stop_reason == "max_tokens"
        assert (await ask(model)).stop_reason == "refusal"


# --- faults ------------------------------------------------------------------------------------------


async def test_a_rate_limit_is_retried_after_the_time_it_asks_for():
    scenario = Scenario.from_turns({"default": [{"fault": {"status": 429, "retry_after": 1}}, "Recovered."]})
    async with serving(scenario) as (server, model):
        with anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=1) as sync:
            started = time.monotonic()
            message = await asyncio.to_thread(sync.messages.create, model=MODEL, max_tokens=10, messages=HELLO)
            waited = time.monotonic() - started

    assert message.content[0].text == "Recovered."
    assert 1.0 <= waited < 3.0
    assert [r.status for r in server.requests] == [429, 200]


@pytest.mark.parametrize(("status", "error", "kind"), [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
])
async def test_a_storm_of_errors_exhausts_the_retries(status, error, kind):
    scenario = {"conversations": {"default": ["never reached"]},
                "faults": {"every": 1, "status": status, "retry_after": 0.01}}
    async with serving(scenario, max_retries=2) as (server, model):
        with pytest.raises(anthropic.APIStatusError) as failed:
            await ask(model)

    assert isinstance(failed.value, error)
    assert failed.value.status_code == status
    assert failed.value.body["error"]["type"] == kind
    assert failed.value.request_id.startswith("req_")
    assert [r.status for r in server.requests] == [status] * 3


async def test_a_storm_every_few_requests_spares_the_others():
    scenario = Scenario.from_turns({"default": ["one", "two", "three"]},
                                   faults={"every": 2, "status": 529, "retry_after": 0.01})
    async with serving(scenario, max_retries=1) as (server, model):
        texts = [(await ask(model)).content[0].text for _ in range(3)]

    assert texts == ["one", "two", "three"]
    assert [r.status for r in server.requests] == [200, 529, 200, 529, 200]


async def test_fault_turns_hold_back_the_reply_that_follows_them():
    scenario = Scenario.from_turns({"default": [{"fault": {"status": 529, "retry_after": 0.01}},
                                                {"fault": {"status": 500, "retry_after": 0.01}},
                                                "Finally."]})
    async with serving(scenario, max_retries=2) as (server, model):
        message = await ask(model)

    assert message.content[0].text == "Finally."
    assert [(r.status, r.turn) for r in server.requests] == [(529, 0), (500, 1), (200, 2)]


async def test_a_dropped_stream_raises_in_the_sdk():
    scenario = Scenario.from_turns({"default": [{"fault": {"drop_after_events": 3}}, "Whole answer."]})
    async with serving(scenario) as (server, model):
        seen = []
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            async with model.messages.stream(model=MODEL, max_tokens=10, messages=HELLO) as stream:
                async for event in stream:
                    seen.append(event.type)
        retried = await ask(model)

    assert seen[0] == "message_start" and "message_stop" not in seen
    assert retried.content[0].text == "Whole answer."
    assert [r.status for r in server.requests] == [0, 200]


async def test_a_dropped_connection_is_retried_by_the_sdk():
    scenario = Scenario.from_turns({"default": [{"fault": {"drop_after_events": 0}}, "Second try."]})
    async with serving(scenario, max_retries=1) as (server, model):
        message = await ask(model)

    assert message.content[0].text == "Second try."


async def test_a_slow_answer_runs_into_the_client_timeout():
    scenario = Scenario.from_turns({"default": [{"reply": "late", "delay": 0.3}]})
    async with serving(scenario) as (server, model):
        with pytest.raises(anthropic.APITimeoutError):
            await model.with_options(timeout=0.1).messages.create(model=MODEL, max_tokens=10, messages=HELLO)


# --- conversations and expectations ------------------------------------------------------------------


async def test_conversations_are_kept_apart_by_metadata_user_id():
    scenario = Scenario.from_turns({
        "team-a/fix-ci": ["a1", "a2"],
        "team-b/docs": ["b1", "b2"],
        "default": ["d1"],
    })
    async with serving(scenario) as (server, model):
        order = ["team-a/fix-ci", "team-b/docs", "team-b/docs", "team-a/fix-ci", "team-c/other", None]
        texts = [(await ask(model, user=user)).content[0].text for user in order]

    assert texts == ["a1", "b1", "b2", "a2", "d1", "d1"]
    assert [r.body["messages"] for r in server.requests_for("team-b/docs")] == [HELLO, HELLO]
    assert {r.conversation for r in server.requests} == {"team-a/fix-ci", "team-b/docs", "team-c/other", "default"}


async def test_a_conversation_without_a_script_is_refused():
    async with serving(Scenario.from_turns({"team-a/fix-ci": ["a1"]})) as (server, model):
        with pytest.raises(anthropic.BadRequestError, match="no scripted conversation for metadata.user_id 'x/y'"):
            await ask(model, user="x/y")


async def test_an_unexpected_prompt_gets_a_clear_400_and_the_turn_waits():
    scenario = Scenario.from_turns({"team-a/fix-ci": [{"expect": {"last_user_contains": "Make tests pass"},
                                                       "reply": "On it."}]})
    async with serving(scenario) as (server, model):
        with pytest.raises(anthropic.BadRequestError) as refused:
            await ask(model, [{"role": "user", "content": "Write the docs"}], user="team-a/fix-ci")
        accepted = await ask(model, user="team-a/fix-ci")

    message = refused.value.body["error"]["message"]
    assert "conversation 'team-a/fix-ci' turn 0" in message
    assert "'Make tests pass'" in message and "'Write the docs'" in message
    assert server.mismatches == [message]
    assert accepted.content[0].text == "On it."


# --- prompt caching ----------------------------------------------------------------------------------


def text(chars: int, letter: str = "s", cache: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": letter * chars}
    return {**block, "cache_control": EPHEMERAL} if cache else block


def usage_of(message: anthropic.types.Message) -> tuple[int, int, int]:
    u = message.usage
    return u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_accounting_matches_the_arithmetic_of_a_small_example():
    system = [text(4096, cache=True)]  # 1024 tokens: exactly the minimum
    first = [{"role": "user", "content": [text(400, "a", cache=True)]}]  # 100 + 3
    second = [{"role": "user", "content": "a" * 400},  # the same block, now without its breakpoint
              {"role": "assistant", "content": "b" * 40},  # 10 + 3
              {"role": "user", "content": [text(80, "c", cache=True), text(20, "d")]}]  # 20 + 3, then 5
    clock = Clock()
    scenario = Scenario.from_turns({"default": ["ok"]}, repeat_last=True)
    async with serving(scenario, clock=clock) as (server, model):
        created = await ask(model, first, system=system)
        clock.now += 200
        extended = await ask(model, second, system=system)
        clock.now += 250  # 450 s after the write, 250 s after the read that refreshed it
        refreshed = await ask(model, first, system=system)
        clock.now += 301
        expired = await ask(model, second, system=system)
        other_key = await ask(model.with_options(api_key="other"), second, system=system)

    assert usage_of(created) == (0, 1024 + 103, 0)
    assert usage_of(extended) == (5, 23 + 13, 1024 + 103)
    assert usage_of(refreshed) == (0, 0, 1024 + 103)  # the system prompt alone has expired
    assert usage_of(expired) == (5, 1024 + 103 + 13 + 23, 0)
    assert usage_of(other_key) == (5, 1024 + 103 + 13 + 23, 0)
    assert created.usage.cache_creation.ephemeral_5m_input_tokens == 1024 + 103


async def test_nothing_is_cached_below_the_minimum_length():
    system = [text(4092, cache=True)]  # 1023 tokens
    messages = [{"role": "user", "content": [text(4, "a", cache=True)]}]  # 1 + 3: 1027 in all
    long_system = [text(6000, cache=True)]  # 1500 tokens: enough for Sonnet, not for Haiku
    async with serving(Scenario.from_turns({"default": ["ok"]}, repeat_last=True)) as (server, model):
        small = [usage_of(await ask(model, HELLO, system=system)) for _ in range(2)]
        mixed = [usage_of(await ask(model, messages, system=system)) for _ in range(2)]
        haiku = [usage_of(await model.messages.create(model="claude-haiku-5", max_tokens=10,
                                                      messages=HELLO, system=long_system))
                 for _ in range(2)]
        sonnet = [usage_of(await ask(model, HELLO, system=long_system)) for _ in range(2)]

    assert small == [(1023 + 7, 0, 0)] * 2
    assert mixed == [(0, 1027, 0), (0, 0, 1027)]  # the prefix through the last breakpoint is long enough
    assert haiku == [(1500 + 7, 0, 0)] * 2
    assert sonnet == [(7, 1500, 0), (7, 0, 1500)]


async def test_a_long_tool_loop_reads_most_of_its_prompt_from_the_cache():
    turns = 30
    tools = [{"name": "read_file", "description": "Read a file from the workspace",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    system = [text(5000, cache=True)]
    history: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Make tests pass"}]}]
    usages = []
    scenario = Scenario.tool_loop(turns=turns, tool="read_file", input={"path": "src/parser.py"})
    async with serving(scenario) as (server, model):
        for _ in range(turns):
            messages = copy.deepcopy(history)
            messages[-1]["content"][-1]["cache_control"] = EPHEMERAL  # the breakpoint moves with the last turn
            message = await ask(model, messages, system=system, tools=tools)
            usages.append(message.usage)
            if message.stop_reason != "tool_use":
                break
            history.append({"role": "assistant", "content": blocks_of(message)})
            history.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": b.id, "content": "line\n" * 80}
                for b in message.content if b.type == "tool_use"]})

    assert len(usages) == turns and message.content[0].text.startswith("Done after 29 calls")
    later = usages[1:]
    read = sum(u.cache_read_input_tokens for u in later)
    total = sum(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens for u in later)
    assert read / total > 0.8
    assert all(u.cache_read_input_tokens > 0 for u in later)


# --- the scenario file and the command --------------------------------------------------------------


def test_a_scenario_with_a_mistake_names_where_it_is():
    with pytest.raises(ScenarioError, match=r"conversations.team-a/fix-ci\[1\]: unknown keys \['replies'\]"):
        Scenario.from_dict({"conversations": {"team-a/fix-ci": ["fine", {"replies": ["oops"]}]}})
    with pytest.raises(ScenarioError, match=r"conversations.default\[0\]: expected exactly one of reply or fault"):
        Scenario.from_turns({"default": [{"reply": "a", "fault": {"status": 500}}]})


async def test_the_command_serves_a_scenario_file(tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("conversations:\n  default:\n    - reply: [{text: From the file.}]\n")
    command = [sys.executable, "-c", "from overseer.testing.scripted_model import main; main()",
               "--scenario", str(scenario), "--port", "0"]
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        second = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        url = first.strip().removeprefix("listening on ")
        async with anthropic.AsyncAnthropic(base_url=url, api_key="test", max_retries=0) as remote:
            message = await remote.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    finally:
        process.terminate()
        await process.wait()

    assert first.startswith("listening on http://127.0.0.1:")
    assert "not a real model" in second
    assert message.content[0].text == "From the file."


async def test_follow_history_answers_a_resumed_conversation_as_before():
    scenario = {"follow_history": True, "conversations": {"default": [
        "first", {"fault": {"status": 500}}, "second"]}}
    async with serving(scenario, max_retries=0) as (server, model):
        assert (await ask(model)).content[0].text == "first"
        assert (await ask(model)).content[0].text == "first", "the same history gets the same answer"
        history = [*HELLO, {"role": "assistant", "content": "first"}, {"role": "user", "content": "go on"}]
        with pytest.raises(anthropic.InternalServerError):
            await ask(model, history)  # the fault fires once, on the way to the second reply
        assert (await ask(model, history)).content[0].text == "second"
        assert (await ask(model, history)).content[0].text == "second"


async def test_a_paced_stream_sends_its_events_apart_and_a_whole_answer_when_the_stream_would_end():
    scenario = Scenario.from_turns({"default": [{"reply": "paced", "event_interval": 0.05}]}, repeat_last=True)
    async with serving(scenario) as (server, model):
        arrivals: list[float] = []
        started = time.perf_counter()
        async with model.messages.stream(model=MODEL, max_tokens=10, messages=HELLO) as stream:
            async for _ in stream:
                arrivals.append(time.perf_counter() - started)
        started = time.perf_counter()
        whole = await ask(model)
        waited = time.perf_counter() - started

    # message_start, content_block_start, ping, a delta, content_block_stop, message_delta, message_stop:
    # six intervals between the first event and the last
    assert arrivals[-1] >= 6 * 0.05
    assert whole.content[0].text == "paced" and waited >= 6 * 0.05
