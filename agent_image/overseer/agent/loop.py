"""The execution loop: call the model with tools, run the tools it asks for, append the
results, checkpoint, report; until the model stops calling tools, the budget is spent or the
goal is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .sdk import anthropic

from overseer import approvals
from overseer.kube import now_iso

from . import backoff, metrics, untrusted
from .checkpoint import Checkpoints, WorkspaceFull
from .gateway_token import exhausted_budget
from .tools.base import Assessment, ToolContext, ToolRegistry, cap_output, risk_at_least
from .tools.todo import TodoList

logger = logging.getLogger(__name__)

CACHE = {"type": "ephemeral"}


@dataclass
class Budget:
    max_tokens: int | None = None
    max_iterations: int | None = None
    max_seconds: float | None = None


@dataclass
class Counters:
    """What the loop has done so far; part of every checkpoint."""

    iteration: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    seconds: float = 0.0
    tool_calls: int = 0
    steer_seen: str = ""          # last steering annotation already delivered
    partial: list[dict[str, Any]] = field(default_factory=list)  # results of the current round so far

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def tokens(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "cacheRead": self.cache_read,
                "cacheWrite": self.cache_write, "total": self.total}


@dataclass
class Outcome:
    success: bool
    result: str
    reason: str = ""              # CamelCase, for failures the operator should not retry
    retryable: bool = False


class Link(Protocol):
    """What the loop needs from its Goal (see goal_link.GoalLink)."""

    @property
    def cancelled(self) -> bool: ...
    @property
    def annotations(self) -> dict[str, str]: ...
    @property
    def goal(self) -> dict[str, Any]: ...
    def decision(self, approval_id: str) -> tuple[str, str] | None: ...
    async def wait_until(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any: ...
    async def report(self, **fields: Any) -> None: ...


class ModelUnavailable(Exception):
    """The model API kept failing through every attempt the loop makes (see backoff.py)."""


@dataclass
class LoopConfig:
    model: str
    max_tokens: int
    system: str
    goal_key: str                         # "namespace/name", sent as metadata.user_id
    min_approval_risk: str = "high"
    context_tokens: int = 200_000
    compact_at: float = 0.75
    breaker_failures: int = 8             # failed calls in a row before giving up (the only retry layer)
    breaker_base_delay: float = 1.0       # doubles per failure, with jitter (backoff.delay)
    breaker_max_delay: float = 60.0       # also caps what a retry-after may ask
    record_timeout: float = 300.0         # how long an approved self-modification waits for the operator


Publish = Callable[[str, dict[str, Any]], Awaitable[None]]
SteeringDrain = Callable[[], Awaitable[list[str]]]


class AgentLoop:
    def __init__(self, client: anthropic.AsyncAnthropic, config: LoopConfig, tools: ToolRegistry, ctx: ToolContext,
                 link: Link, checkpoints: Checkpoints, budget: Budget, todos: TodoList,
                 publish: Publish | None = None, steering: SteeringDrain | None = None,
                 rate_limit: Any | None = None, on_decision: Callable[..., Awaitable[None]] | None = None,
                 resume_note: str | None = None) -> None:
        self.client = client
        self.config = config
        self.tools = tools
        self.ctx = ctx
        self.link = link
        self.checkpoints = checkpoints
        self.budget = budget
        self.todos = todos
        self.publish = publish
        self.steering = steering
        self.rate_limit = rate_limit
        self.on_decision = on_decision
        self.messages: list[dict[str, Any]] = []
        self.resume_note = resume_note    # told to the model once when a checkpoint is resumed
        self._notices: list[str] = []
        self.actions: list[tuple[str, str]] = []  # (tool, one-line outcome), for the knowledge base
        self.counters = Counters()
        self._saved = 0                   # messages already in the checkpoint
        self._started = time.monotonic()
        self._failures = 0
        self._refused: dict[str, str] = {}  # calls of the latest answer that must not run (see _malformed)
        self._cache_mark = -1             # the message that carried the last call's breakpoint
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None

    # ---- state ----------------------------------------------------------------------------

    async def resume_or_start(self, task: str) -> None:
        checkpoint = await self.checkpoints.load()
        if checkpoint is not None and checkpoint.messages:
            self.messages = checkpoint.messages
            self.counters = Counters(**{k: v for k, v in checkpoint.counters.items()
                                        if k in Counters.__dataclass_fields__})
            self.todos.replace(TodoList.from_dict(checkpoint.todos).items)
            self._saved = len(self.messages)
            logger.info("resuming at iteration %d with %d messages", self.counters.iteration, len(self.messages))
            await self._emit("resumed", {"iteration": self.counters.iteration})
            if self.resume_note:
                logger.warning("%s", self.resume_note)
                self._notices.append(self.resume_note)
        else:
            self.messages = [{"role": "user", "content": [{"type": "text", "text": task}]}]

    async def _checkpoint(self) -> None:
        with metrics.CHECKPOINT_SECONDS.time():
            await self._save()

    async def _save(self) -> None:
        new = self.messages[self._saved:]
        self.counters.seconds = self._elapsed()
        state = (self.todos.to_dict(), vars(self.counters).copy())
        if not await self.checkpoints.save(self.counters.iteration, new, *state):
            await self.checkpoints.replace(self.messages)
            await self.checkpoints.save(self.counters.iteration, [], *state)
        self._saved = len(self.messages)

    def _elapsed(self) -> float:
        return self.counters.seconds + (time.monotonic() - self._started)

    async def _emit(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the live stream; a background task publishes them in order."""
        if self.publish is None:
            return
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_events(), name="events")
        self._events.put_nowait((kind, data))

    async def _publish_events(self) -> None:
        assert self.publish is not None
        while True:
            kind, data = await self._events.get()
            try:
                await self.publish(kind, data)
            except Exception as e:  # noqa: BLE001 - the live stream is best effort
                logger.debug("event not published: %s", e)
            finally:
                self._events.task_done()

    async def flush_events(self, timeout: float = 5.0) -> None:
        """Publish what is queued (bounded by timeout), then stop the publisher."""
        if self._publisher is None:
            return
        try:
            await asyncio.wait_for(self._events.join(), timeout)
        except asyncio.TimeoutError:
            logger.warning("%d events not published", self._events.qsize())
        self._publisher.cancel()
        self._publisher = None

    async def _report(self, **extra: Any) -> None:
        await self.link.report(iteration=self.counters.iteration, tokens=self.counters.tokens(),
                               progress=self.todos.progress(self.counters.iteration), **extra)

    # ---- the loop -------------------------------------------------------------------------

    async def run(self, task: str) -> Outcome:
        try:
            return await self._run(task)
        except WorkspaceFull as e:
            # Not retried: the next attempt finds the same workspace, as full.
            return Outcome(False, str(e), "WorkspaceFull")

    async def _run(self, task: str) -> Outcome:
        await self.resume_or_start(task)
        self._started = time.monotonic()
        while True:
            stop = self._should_stop()
            if stop is not None:
                return stop
            await self._deliver_steering()
            await self._maybe_compact()
            pending = self._unanswered_tool_uses()
            if pending is None:
                try:
                    response = await self._call_model()
                except ModelUnavailable as e:
                    return Outcome(False, str(e), "ModelUnavailable", retryable=True)
                except anthropic.APIStatusError as e:  # a request the API refuses for good (400, 401, 403, 404)
                    if exhausted_budget(e):  # the model gateway's budget: a retry cannot fix it either
                        return Outcome(False, _error_message(e), "BudgetExhausted")
                    return Outcome(False, f"the model API refused the request: {e}", "ModelRequestRejected")
                self.counters.iteration += 1
                metrics.ITERATIONS.inc()
                content = [block.model_dump(exclude_none=True, mode="json") for block in response.content]
                self.messages.append({"role": "assistant", "content": content})
                text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text").strip()
                await self._emit("turn", {"iteration": self.counters.iteration, "stop_reason": response.stop_reason,
                                          "text": text[:2000]})
                if response.stop_reason == "refusal":
                    await self._checkpoint()
                    return Outcome(False, text or "the model refused", "Refusal")
                tool_uses = [b for b in content if b.get("type") == "tool_use"]
                self._refused = _malformed(tool_uses, cut=response.stop_reason == "max_tokens")
                if not tool_uses:
                    if response.stop_reason == "max_tokens":
                        self.messages.append({"role": "user", "content": [{
                            "type": "text", "text": "Your reply was cut off at the output limit. Continue where it stopped."}]})
                        await self._checkpoint()
                        continue
                    await self._checkpoint()
                    return Outcome(True, text or "done")
                pending = (tool_uses, [])
            # What a crash costs. A call with side effects, or one that waits for a person, starts
            # only once the answer that asked for it is saved, and its result is saved before the
            # next call starts: a replaced pod resumes with that answer and never repeats a finished
            # call (one cut off mid-run runs again). A round of calls that change nothing is saved
            # once, with its answer: a crash before that save costs asking the model again.
            tool_uses, results = pending
            for use in tool_uses[len(results):]:
                assessment = self.tools.assess(use["name"], use.get("input") or {}, self.ctx)
                effects = assessment.side_effects or self._needs_approval(assessment)
                if effects and self._saved < len(self.messages):
                    await self._checkpoint()
                results.append(await self._run_tool(use, assessment))
                self.counters.tool_calls += 1
                # A name the model made up is one label value, not one series per invention.
                tool = use["name"] if self.tools.get(use["name"]) is not None else "unknown"
                metrics.TOOL_CALLS.labels(tool, assessment.risk).inc()
                self.counters.partial = list(results)
                if effects and len(results) < len(tool_uses):
                    await self._checkpoint()
            self.counters.partial = []
            self._finish_results(results)
            await self._checkpoint()
            await self._report()

    def _should_stop(self) -> Outcome | None:
        if self.link.cancelled:
            return Outcome(False, "the goal was cancelled", "Cancelled")
        b = self.budget
        if b.max_tokens is not None and self.counters.total >= b.max_tokens:
            return Outcome(False, f"token budget spent: {self.counters.total} of {b.max_tokens}", "BudgetExhausted")
        if b.max_iterations is not None and self.counters.iteration >= b.max_iterations:
            return Outcome(False, f"iteration budget spent: {self.counters.iteration} of {b.max_iterations}",
                           "BudgetExhausted")
        if b.max_seconds is not None and self._elapsed() >= b.max_seconds:
            return Outcome(False, f"wall-clock budget spent: {self._elapsed():.0f}s of {b.max_seconds:.0f}s",
                           "BudgetExhausted")
        return None

    # ---- tool calls ---------------------------------------------------------------------

    def _unanswered_tool_uses(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """The tool calls of the last model answer that still lack results (after a restart,
        the ones the checkpoint has no result for yet)."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            return None
        uses = [b for b in self.messages[-1]["content"] if b.get("type") == "tool_use"]
        return (uses, list(self.counters.partial)) if uses else None

    def _finish_results(self, results: list[dict[str, Any]]) -> None:
        content = list(results)
        todo = self.todos.render()
        if todo:  # the current TODO list is re-shown after every round of tool calls
            content.append({"type": "text", "text": todo})
        self.messages.append({"role": "user", "content": content})

    def _needs_approval(self, assessment: Assessment) -> bool:
        return risk_at_least(assessment.risk, self.config.min_approval_risk)

    async def _run_tool(self, use: dict[str, Any], assessment: Assessment) -> dict[str, Any]:
        name, args, use_id = use["name"], use.get("input") or {}, use["id"]
        refused = self._refused.get(use_id)
        if refused is not None:
            await self._emit("tool_result", {"name": name, "summary": f"{name}: not run", "is_error": True,
                                             "content": refused})
            return {"type": "tool_result", "tool_use_id": use_id, "is_error": True, "content": refused}
        await self._emit("tool_call", {"name": name, "input": args, "risk": assessment.risk,
                                       "reason": assessment.reason})
        if self._needs_approval(assessment):
            verdict, reason = await self._ask_approval(use_id, name, args, assessment)
            if verdict != "approved":
                return {"type": "tool_result", "tool_use_id": use_id, "is_error": True,
                        "content": f"A person denied this call{': ' + reason if reason else ''}. "
                                   f"Do not retry it; choose another way or explain why it is needed."}
        result = await self.tools.run(name, args, dataclasses.replace(self.ctx, call_id=use_id))
        if len(self.actions) < 500:
            self.actions.append((name, ("error: " if result.is_error else "") + (result.summary or "")[:200]))
        await self._emit("tool_result", {"name": name, "summary": result.summary, "is_error": result.is_error,
                                         "content": result.content[:2000]})
        await self.link.report(lastTool=(result.summary or name)[:200])
        content = cap_output(result.content or "(no output)", self.ctx.output_limit,
                             "; ask for less, e.g. a range of lines or a narrower pattern")
        return {"type": "tool_result", "tool_use_id": use_id, "content": untrusted.mark(name, content),
                "is_error": result.is_error}

    async def _ask_approval(self, use_id: str, name: str, args: dict[str, Any], assessment: Any) -> tuple[str, str]:
        approval_id = f"{name}-{use_id[-8:]}".lower().replace("_", "-")
        detail = args.get("command") if isinstance(args.get("command"), str) else json.dumps(args)[:4000]
        request: dict[str, Any] = {"id": approval_id, "kind": "toolCall",
                   "summary": f"{name} ({assessment.risk} risk): {assessment.reason}"[:300],
                   "detail": detail, "requestedAt": now_iso()}
        own_request = getattr(self.tools.get(name), "approval_request", None)
        if own_request is not None:  # a tool that asks in its own terms (a self-modification)
            request.update(own_request(args))
            approval_id = request["id"]
        await self.link.report(pendingApprovals=[request])
        await self._emit("approval_requested", request)
        logger.info("waiting for approval %s: kubectl annotate goal/%s overseer.dev/approve=%s",
                    approval_id, self.config.goal_key.split("/", 1)[1], approval_id)
        verdict, reason = await self.link.wait_until(lambda: self.link.decision(approval_id)
                                                     or (("denied", "the goal was cancelled") if self.link.cancelled else None))
        if verdict == "approved" and request["kind"] != "toolCall":
            # The operator acts on such a request (stores the modification) before it records the
            # decision in status: keep the request until then, or it would never see it.
            with contextlib.suppress(asyncio.TimeoutError):
                await self.link.wait_until(lambda: self.link.cancelled or any(
                    d.get("id") == approval_id for d in (self.link.goal.get("status") or {}).get("decisions") or []),
                    timeout=self.config.record_timeout)
        await self.link.report(pendingApprovals=[])
        await self._emit("approval_decided", {"id": approval_id, "decision": verdict, "reason": reason})
        if self.on_decision is not None:
            await self.on_decision(approval_id, name, request["summary"], verdict, reason)
        return verdict, reason

    # ---- steering and context -----------------------------------------------------------

    async def _deliver_steering(self) -> None:
        if self._unanswered_tool_uses() is not None:
            return  # tool results must follow their calls at once: the next round takes the notes
        notes: list[str] = []
        steer = self.link.annotations.get(approvals.STEER, "")
        if steer and steer != self.counters.steer_seen:
            notes.append(steer)
            self.counters.steer_seen = steer
        if self.steering is not None:
            try:
                notes.extend(await self.steering())
            except Exception as e:  # noqa: BLE001 - steering is best effort
                logger.debug("steering queue unavailable: %s", e)
        if not notes and not self._notices:
            return
        text = "\n".join([*self._notices, *(f"Steering from the person who owns this goal: {n}" for n in notes)])
        self._notices = []
        # A user turn of its own (the API joins consecutive user turns): history stays append-only.
        self.messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
        await self._checkpoint()
        await self._emit("steering", {"text": text})

    async def _maybe_compact(self) -> None:
        last_prompt = getattr(self, "_last_prompt_tokens", 0)
        if last_prompt < self.config.context_tokens * self.config.compact_at or len(self.messages) < 4:
            return
        if self.messages[-1]["role"] != "user":
            return
        ask = {"type": "text", "text": (
            "Context is running out. Write a summary of this work for yourself to continue from: the task, "
            "decisions made and why, files changed, commands that worked or failed, and what is left to do. "
            "Be complete but brief. Do not call tools.")}
        # The same tools, system and breakpoints as a normal call, so the summary request reads
        # the conversation from cache instead of paying for all of it again.
        request = self._request()
        request["messages"][-1]["content"].append(ask)
        request["max_tokens"] = min(self.config.max_tokens, 4096)
        response = await self.client.messages.create(**request)
        self._count(response.usage)
        summary = "\n".join(b.text for b in response.content if b.type == "text")
        task = self.messages[0]["content"]
        self.messages = [{"role": "user", "content": [*task, {"type": "text", "text":
                          "Summary of the work so far (older turns were compacted):\n" + summary +
                          ("\n\n" + self.todos.render() if self.todos.render() else "")}]}]
        await self.checkpoints.replace(self.messages)
        self._saved = len(self.messages)
        self._last_prompt_tokens = 0
        self._cache_mark = -1
        await self._emit("compacted", {"summary": summary[:2000]})

    # ---- the model ------------------------------------------------------------------------

    def _request(self) -> dict[str, Any]:
        tools = self.tools.definitions()
        if tools:
            tools = [*tools[:-1], {**tools[-1], "cache_control": CACHE}]
        messages = _strip_local(self.messages)
        # A breakpoint on the newest turn lets the next call read everything before it from cache.
        # The API looks back only 20 blocks from a breakpoint for a cached prefix, and one round
        # of many parallel tool calls adds more than that: so the previous call's breakpoint stays
        # too (tools, system and these two make the API's maximum of four).
        for i in {len(messages) - 1, self._cache_mark}:
            if 0 <= i < len(messages) and messages[i]["content"]:
                content = messages[i]["content"]
                messages[i]["content"] = [*content[:-1], {**content[-1], "cache_control": CACHE}]
        return {"model": self.config.model, "max_tokens": self.config.max_tokens,
                "system": [{"type": "text", "text": f"{self.config.system}\n\n{untrusted.NOTE}",
                            "cache_control": CACHE}],
                "tools": tools, "messages": messages, "metadata": {"user_id": self.config.goal_key}}

    async def _call_model(self) -> Any:
        request = self._request()
        while True:
            estimate = getattr(self, "_last_prompt_tokens", 0) + self.config.max_tokens // 4
            if self.rate_limit is not None:
                await self.rate_limit.acquire(estimate)
            try:
                with metrics.MODEL_CALL_SECONDS.time():
                    response = await self.client.messages.create(**request)
            except (anthropic.APIConnectionError, anthropic.RateLimitError, anthropic.InternalServerError,
                    anthropic.APIStatusError) as e:
                status = getattr(e, "status_code", None)
                metrics.MODEL_CALL_ERRORS.labels(str(status or 0)).inc()
                if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
                    raise  # a request the API will never accept: a bug, not an outage
                self._failures += 1
                if self._failures >= self.config.breaker_failures:
                    raise ModelUnavailable(f"the model API failed {self._failures} times in a row: {e}") from e
                delay = backoff.delay(self._failures, e, self.config.breaker_base_delay, self.config.breaker_max_delay)
                logger.warning("model call failed (%s); retry %d in %.1fs", e, self._failures, delay)
                await self._emit("model_error", {"error": str(e)[:500], "retry_in": delay})
                await asyncio.sleep(delay)
                continue
            self._failures = 0
            self._cache_mark = len(self.messages) - 1
            if self.rate_limit is not None:
                usage = response.usage
                await self.rate_limit.settle(estimate, usage.input_tokens + usage.output_tokens
                                             + (usage.cache_read_input_tokens or 0)
                                             + (usage.cache_creation_input_tokens or 0))
            self._count(response.usage)
            return response

    def _count(self, usage: Any) -> None:
        self.counters.input += usage.input_tokens or 0
        self.counters.output += usage.output_tokens or 0
        self.counters.cache_read += usage.cache_read_input_tokens or 0
        self.counters.cache_write += usage.cache_creation_input_tokens or 0
        self._last_prompt_tokens = ((usage.input_tokens or 0) + (usage.cache_read_input_tokens or 0)
                                    + (usage.cache_creation_input_tokens or 0))


def _malformed(tool_uses: list[dict[str, Any]], cut: bool) -> dict[str, str]:
    """Tool calls of one answer that must not run, by id, with the error the model reads instead.
    An input that is not a JSON object is replaced by {} in the answer itself, or the API would
    refuse every later request that repeats it."""
    refused = {}
    for use in tool_uses:
        if not isinstance(use.get("input"), dict):
            raw = use.get("input")
            use["input"] = {}
            refused[use["id"]] = (f"The input of this {use['name']} call was not a JSON object ({str(raw)[:200]!r}), "
                                  f"so it was not run. Call {use['name']} again with a JSON object matching its "
                                  f"input schema.")
    if cut and tool_uses:  # the last call was being written when the output limit was reached
        last = tool_uses[-1]
        refused[last["id"]] = (f"Your answer was cut off at the output limit while writing this {last['name']} "
                               f"call, so its input may be incomplete and it was not run. Call it again with "
                               f"less in one call (for example, write a long file in several parts).")
    return refused


def _strip_local(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies the request may decorate (cache_control) without touching the history."""
    return [{"role": m["role"], "content": list(m["content"])} for m in messages]


def _error_message(error: anthropic.APIStatusError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    return str((body.get("error") or {}).get("message") or error.message)
