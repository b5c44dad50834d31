"""The gateway between the real anthropic SDK and the scripted model: plain and streamed calls,
tool use, count_tokens, and errors as the SDK knows them. Who the caller is comes from a fixed
token table here; e2e/test_gateway.py does the same through the API server's TokenReview."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import orjson
import pytest
import uvloop
from aiohttp import web

from overseer.testing.scripted_model import ScriptedModelServer, count_tokens
from overseer.gateway.app import serve as serve_gateway, upstream_pool
from overseer.gateway.errors import GatewayError
from overseer.gateway.http import Server
from overseer.gateway.identity import Caller
from overseer.gateway.proxy import Proxy
from overseer.gateway.pool import UpstreamPool
from overseer.gateway.settings import GatewaySettings
from overseer.gateway.upstream import Target

MODEL = "claude-sonnet-5-5"
UPSTREAM_KEY = "sk-ant-upstream-only-the-gateway-knows"
POD_TOKEN = "pod-token-of-fix-ci"
CALLER = Caller("team-a", "fix-ci-a1", "fix-ci", "uid-fix-ci", "coder")
TOOLS = [{"name": "read_file", "description": "Read a file of the workspace",
          "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]


class TokenTable:
    """Stands where the TokenReview-backed Identity does: known tokens name their caller."""

    async def caller(self, token: str) -> Caller:
        if token != POD_TOKEN:
            raise GatewayError(401, "token rejected by the Kubernetes API (audience overseer-gateway expected)")
        return CALLER


class OneTarget:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def target(self, namespace: str, agent: str) -> Target:
        return Target(self.base_url, UPSTREAM_KEY, MODEL)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def gateway_to() -> AsyncIterator[Any]:
    """gateway_to(upstream_url) -> the gateway's URL, in front of that model endpoint."""
    servers: list[Server] = []
    pools: list[UpstreamPool] = []

    async def start(upstream: str) -> str:
        pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
        pools.append(pool)
        server = await serve_gateway(Proxy(TokenTable(), OneTarget(upstream), pool), "127.0.0.1", 0)  # type: ignore[arg-type]
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()
    for pool in pools:
        await pool.close()


def sdk(url: str, token: str = POD_TOKEN) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=token, max_retries=0)


async def test_a_plain_call_reaches_the_model_with_the_agents_key_not_the_pods_token(gateway_to: Any) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["Hello from the model."]}}) as model:
        client = sdk(await gateway_to(model.url))
        answer = await client.messages.create(model=MODEL, max_tokens=100,
                                              messages=[{"role": "user", "content": "Say hello"}])
    assert answer.content[0].text == "Hello from the model."  # type: ignore[union-attr]
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert [r.api_key for r in model.requests] == [UPSTREAM_KEY]
    assert model.requests[0].body["messages"] == [{"role": "user", "content": "Say hello"}]


async def test_a_streamed_call_arrives_event_by_event_with_tool_use(gateway_to: Any) -> None:
    scenario = {"conversations": {"default": [
        {"reply": [{"text": "Reading the parser."}, {"tool_use": {"name": "read_file", "input": {"path": "p.py"}}}]},
        "The parser is fine."]}}
    async with ScriptedModelServer(scenario) as model:
        client = sdk(await gateway_to(model.url))
        messages: list[Any] = [{"role": "user", "content": "Check the parser"}]
        async with client.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS, messages=messages) as stream:
            kinds = [event.type async for event in stream]
            first = await stream.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        assert "content_block_delta" in kinds
        assert first.stop_reason == "tool_use"
        call = next(b for b in first.content if b.type == "tool_use")
        assert (call.name, call.input) == ("read_file", {"path": "p.py"})
        messages += [{"role": "assistant", "content": first.content},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}]
        second = await client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=messages,
                                              stream=False)
    assert second.content[0].text == "The parser is fine."  # type: ignore[union-attr]
    assert model.requests[1].body["messages"][-1]["content"][0]["tool_use_id"] == call.id


# The first event of a streamed answer: 5 input tokens, 1 output token.
MESSAGE_START = ('event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                 f'"role":"assistant","model":"{MODEL}","content":[],"stop_reason":null,"stop_sequence":null,'
                 '"usage":{"input_tokens":5,"output_tokens":1}}}\n\n').encode()


async def test_events_are_passed_on_as_they_arrive_not_when_the_answer_ends(gateway_to: Any) -> None:
    # A model that sends message_start, then holds the rest back until told to go on.
    go_on = asyncio.Event()

    async def slow_model(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(MESSAGE_START)
        await go_on.wait()
        await response.write(b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
                             b'"end_turn","stop_sequence":null},"usage":{"output_tokens":1}}\n\n'
                             b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", slow_model)
    runner, model_url = await serve(app)
    try:
        client = sdk(await gateway_to(model_url))
        async with client.messages.stream(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
            events = aiter(s)
            first = await asyncio.wait_for(anext(events), timeout=5)  # while the model still holds the rest
            assert first.type == "message_start"
            go_on.set()
            rest = [e.type async for e in events]
        assert rest[-1] == "message_stop"
    finally:
        go_on.set()
        await runner.cleanup()


async def test_count_tokens_is_answered_by_the_model(gateway_to: Any) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "How many tokens is this sentence?"}],
            "tools": TOOLS}
    async with ScriptedModelServer({"conversations": {"default": ["unused"]}}) as model:
        client = sdk(await gateway_to(model.url))
        counted = await client.messages.count_tokens(**body)  # type: ignore[arg-type]
    assert counted.input_tokens == count_tokens(body)
    assert model.requests[0].path == "/v1/messages/count_tokens" and model.requests[0].api_key == UPSTREAM_KEY


async def test_an_unknown_token_gets_an_authentication_error_and_never_reaches_the_model(gateway_to: Any) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["never sent"]}}) as model:
        client = sdk(await gateway_to(model.url), token="sk-ant-a-key-found-somewhere")
        with pytest.raises(anthropic.AuthenticationError, match="audience overseer-gateway"):
            await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert model.requests == []


async def test_model_errors_come_back_as_the_model_sent_them(gateway_to: Any) -> None:
    scenario = {"conversations": {"default": [{"fault": {"status": 429, "retry_after": 2}},
                                              {"fault": {"status": 529}}, "fine now"]}}
    async with ScriptedModelServer(scenario) as model:
        client = sdk(await gateway_to(model.url))
        request = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(**request)  # type: ignore[arg-type]
        assert limited.value.response.headers["retry-after"] == "2"
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            await client.messages.create(**request)  # type: ignore[arg-type]
        assert overloaded.value.status_code == 529
        # The SDK's own retries ride over both.
        retried = await sdk(client.base_url.__str__()).with_options(max_retries=2).messages.create(**request)
    assert retried.content[0].text == "fine now"  # type: ignore[union-attr]


async def test_a_stream_the_model_breaks_off_breaks_off_as_it_would_without_the_gateway(gateway_to: Any) -> None:
    scenario = {"conversations": {"default": [{"fault": {"drop_after_events": 3}}, "complete answer"]},
                "loop": True}
    errors = []
    async with ScriptedModelServer(scenario) as model:
        for url in (model.url, await gateway_to(model.url)):
            received = []
            with pytest.raises(Exception) as broken:
                async with sdk(url).messages.stream(model=MODEL, max_tokens=10,
                                                    messages=[{"role": "user", "content": "hi"}]) as stream:
                    async for event in stream:
                        received.append(event.type)
            errors.append((type(broken.value), received))
            await sdk(url).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    direct, through_gateway = errors
    assert through_gateway == direct
    assert direct[1][:2] == ["message_start", "content_block_start"]  # the events before the break came


async def test_an_unreachable_model_endpoint_is_a_retryable_api_error(gateway_to: Any) -> None:
    with socket_closed() as dead_url:
        client = sdk(await gateway_to(dead_url))
        with pytest.raises(anthropic.InternalServerError, match="did not answer") as failed:
            await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "error"  # type: ignore[index]


async def test_other_paths_are_api_shaped_not_found(gateway_to: Any) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["x"]}}) as model:
        client = sdk(await gateway_to(model.url))
        with pytest.raises(anthropic.NotFoundError, match="POST /v1/messages"):
            await client.models.list()


class socket_closed:
    """A loopback URL where nothing listens."""

    def __enter__(self) -> str:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_the_agent_reads_its_token_file_again_for_every_call(gateway_to: Any, tmp_path: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from overseer.agent.gateway_token import client_options

    token = tmp_path / "token"
    token.write_text(POD_TOKEN + "\n")
    monkeypatch.setenv("OVERSEER_GATEWAY_TOKEN_FILE", str(token))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    async with ScriptedModelServer({"conversations": {"default": ["one"]}, "repeat_last": True}) as model:
        client = anthropic.AsyncAnthropic(base_url=await gateway_to(model.url), max_retries=0, **client_options())
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        token.write_text("a-token-the-kubelet-wrote-later")  # rotated: the old one is not kept
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert len(model.requests) == 1


class HeldSettling:
    """A meter whose settling waits until the test lets it go on."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()
        self.settled: list[dict[str, Any]] = []

    async def reserve(self, caller: Caller, target: Target, body: bytes, request_id: str) -> str:
        return request_id

    async def settle(self, reservation: Any, usage: dict[str, Any], model: str) -> None:
        await self.go_on.wait()
        self.settled.append(usage)


async def test_a_plain_answer_is_sent_before_the_call_is_settled() -> None:
    meter = HeldSettling()
    async with ScriptedModelServer({"conversations": {"default": ["Hello."]}}) as model:
        pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
        server = await serve_gateway(Proxy(TokenTable(), OneTarget(model.url), pool, meter=meter),  # type: ignore[arg-type]
                                     "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.port}"
        try:
            answer = await asyncio.wait_for(sdk(url).messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]), timeout=10)
            assert answer.content[0].text == "Hello."  # type: ignore[union-attr]
            assert meter.settled == [], "the answer came while settling still waited"
            meter.go_on.set()
            for _ in range(100):
                if meter.settled:
                    break
                await asyncio.sleep(0.02)
            assert meter.settled and meter.settled[0]["output_tokens"] > 0
        finally:
            await server.close()
            await pool.close()


async def test_the_next_call_on_a_connection_does_not_wait_for_the_last_one_to_be_settled() -> None:
    meter = HeldSettling()
    async with ScriptedModelServer({"conversations": {"default": ["Hello."]}, "repeat_last": True}) as model:
        pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
        proxy = Proxy(TokenTable(), OneTarget(model.url), pool, meter=meter)  # type: ignore[arg-type]
        server = await serve_gateway(proxy, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.port}"
        try:
            client = sdk(url)  # one keep-alive connection, reused by the second call
            for _ in range(2):
                async with client.messages.stream(model=MODEL, max_tokens=10,
                                                  messages=[{"role": "user", "content": "hi"}]) as stream:
                    await asyncio.wait_for(stream.get_final_message(), timeout=10)
            assert meter.settled == []
            meter.go_on.set()
            await asyncio.wait_for(proxy.drain(), timeout=10)
            assert len(meter.settled) == 2 and meter.settled[1]["output_tokens"] > 0
        finally:
            await server.close()
            await pool.close()


async def test_a_request_over_the_size_limit_is_refused_in_the_apis_shape_and_never_forwarded(gateway_to: Any) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["never sent"]}}) as model:
        client = sdk(await gateway_to(model.url))
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(model=MODEL, max_tokens=10,
                                         messages=[{"role": "user", "content": "x" * (33 * 1024 * 1024)}])
    assert refused.value.status_code == 413
    assert refused.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert model.requests == []


def _message(text: str) -> bytes:
    return orjson.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
                         "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                         "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}})


async def test_a_kept_alive_model_connection_that_breaks_before_answering_is_replaced_not_an_error(
        gateway_to: Any) -> None:
    # A model endpoint that answers the first call on a connection and drops the connection on the
    # second without a byte, as a server does that closed an idle connection while the call was sent.
    answered = []

    async def model(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls = 0
        while (head := await reader.readuntil(b"\r\n\r\n")):
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            calls += 1
            if calls == 2:
                writer.transport.abort()
                return
            body = _message(f"answer {len(answered) + 1}")
            answered.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                         % (len(body), body))

    server = await asyncio.start_server(model, "127.0.0.1", 0)
    try:
        client = sdk(await gateway_to(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
        texts = [(await client.messages.create(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": "hi"}])).content[0].text for _ in range(2)]  # type: ignore[union-attr]
    finally:
        server.close()
    assert texts == ["answer 1", "answer 2"]


async def test_a_client_that_hangs_up_mid_stream_pays_for_what_it_used_and_the_model_call_is_cut() -> None:
    meter = HeldSettling()
    meter.go_on.set()
    model_saw_hangup = asyncio.Event()

    async def slow_model(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(MESSAGE_START)
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                await response.write(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            model_saw_hangup.set()
            raise
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", slow_model)
    runner, model_url = await serve(app)
    pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
    proxy = Proxy(TokenTable(), OneTarget(model_url), pool, meter=meter)  # type: ignore[arg-type]
    server = await serve_gateway(proxy, "127.0.0.1", 0)
    try:
        client = sdk(f"http://127.0.0.1:{server.port}")
        async with client.messages.stream(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
            first = await asyncio.wait_for(anext(aiter(s)), timeout=5)
            assert first.type == "message_start"
        # the stream is closed here, long before the model's end
        await asyncio.wait_for(model_saw_hangup.wait(), timeout=10)
        await asyncio.wait_for(proxy.drain(), timeout=10)
        assert meter.settled == [{"input_tokens": 5, "output_tokens": 1}]
    finally:
        await server.close()
        await pool.close()
        await runner.cleanup()


def test_the_gateway_serves_a_stream_on_uvloop_as_it_runs_in_production() -> None:
    async def one_streamed_call() -> list[str]:
        async with ScriptedModelServer({"conversations": {"default": ["Hello on uvloop."]}}) as model:
            pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
            server = await serve_gateway(Proxy(TokenTable(), OneTarget(model.url), pool), "127.0.0.1", 0)  # type: ignore[arg-type]
            try:
                async with sdk(f"http://127.0.0.1:{server.port}").messages.stream(
                        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
                    return [event.type async for event in stream]
            finally:
                await server.close()
                await pool.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        kinds = thread.submit(uvloop.run, asyncio.wait_for(one_streamed_call(), timeout=30)).result()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_a_request_with_headers_over_64_kib_is_refused_and_never_forwarded(gateway_to: Any) -> None:
    async with ScriptedModelServer({"conversations": {"default": ["never sent"]}}) as model:
        client = sdk(await gateway_to(model.url))
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                                         extra_headers={"x-padding": "a" * (65 * 1024)})
    assert refused.value.status_code == 431
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert model.requests == []


async def test_idle_and_trickling_clients_are_cut_off_while_a_slow_stream_is_not() -> None:
    """A client that opens a connection and sends nothing, or sends a request a little at a time,
    loses its connection (the trickler with an API-shaped 408); a streamed answer that takes longer
    than either limit is not cut."""
    # Nine events 0.15 s apart: the answer takes 1.2 s, over twice each limit.
    scenario = {"conversations": {"default": [{"reply": "slow but steady " * 3, "event_interval": 0.15}]}}
    async with ScriptedModelServer(scenario) as model:
        pool = upstream_pool(GatewaySettings(upstream_timeout_seconds=30))
        server = await serve_gateway(Proxy(TokenTable(), OneTarget(model.url), pool), "127.0.0.1", 0,  # type: ignore[arg-type]
                                     idle_seconds=0.5, request_seconds=0.5)
        try:
            idle_reader, _idle = await asyncio.open_connection("127.0.0.1", server.port)
            slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
            slow.write(b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\n")  # and never the rest
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed, nothing said
            answer = await asyncio.wait_for(slow_reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408 ") and b'"type":"error"' in answer.replace(b" ", b"")
            assert asyncio.get_running_loop().time() - started < 3

            stream = await sdk(f"http://127.0.0.1:{server.port}").messages.create(
                model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "go"}], stream=True)
            text = "".join([e.delta.text async for e in stream
                            if e.type == "content_block_delta" and e.delta.type == "text_delta"])
            assert text == "slow but steady " * 3
        finally:
            await server.close()
            await pool.close()
