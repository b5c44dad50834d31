"""The execution loop against the scripted model, through the real SDK: no cluster, no database.

Each test runs an AgentLoop with a real ToolRegistry, FileCheckpoints in tmp_path and an
in-memory stand-in for the Goal link.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anthropic
import pytest

from overseer.agent.checkpoint_file import FileCheckpoints
from overseer.agent.loop import AgentLoop, Budget, LoopConfig, Outcome
from overseer.testing.scripted_model import Scenario, ScriptedModelServer, count_tokens, prompt_blocks
from overseer.agent.tools.base import Tool, ToolContext, ToolRegistry, ToolResult
from overseer.agent.tools.bash import BashTool
from overseer.agent.tools.todo import TodoList

MODEL = "claude-sonnet-5-5"
GOAL = "team-a/fix-ci"
TASK = "Make tests/test_parser.py pass without changing the tests."
# Long enough (about 1300 tokens) for the system prompt to be cached on its own.
SYSTEM = "You work autonomously on one goal. " + " ".join(
    f"Rule {i}: keep changes small, run the tests after each edit and report what changed." for i in range(70))


class MemoryLink:
    """The loop's view of its Goal, in memory: never cancelled, no approvals, status kept here."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.reports: list[dict[str, Any]] = []

    @property
    def cancelled(self) -> bool:
        return False

    @property
    def annotations(self) -> dict[str, str]:
        return {}

    @property
    def goal(self) -> dict[str, Any]:
        return {"metadata": {"name": "fix-ci", "namespace": "team-a"}, "spec": {"description": TASK}}

    def decision(self, approval_id: str) -> tuple[str, str] | None:
        return None

    async def wait_until(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        value = predicate()
        if not value:
            raise AssertionError("these tests never wait for a person")
        return value

    async def report(self, **fields: Any) -> None:
        self.status.update(fields)
        self.reports.append(fields)


class Noop(Tool):
    """Does nothing but remember its calls; its result is `size` characters long."""

    name = "noop"
    description = "Does nothing. Used to exercise the loop."
    input_schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}

    def __init__(self, size: int = 40) -> None:
        self.size = size
        self.calls: list[dict[str, Any]] = []

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(dict(input))
        text = f"noop {dict(input)} finished. "
        return ToolResult((text * (self.size // len(text) + 1))[: self.size], summary=f"noop {dict(input)}")


class Crash(Exception):
    """The pod dies (here: right after a checkpoint was written)."""


class PodKilled(BaseException):
    """The pod is killed while a tool runs: nothing in the registry or the loop catches it."""


class Killed(Noop):
    """Noop whose call number `at` (from 0) does its work, and then the pod is killed."""

    def __init__(self, at: int, side_effects: bool) -> None:
        super().__init__()
        self.at = at
        self.side_effects = side_effects

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        result = await super().run(input, ctx)
        if len(self.calls) == self.at + 1:
            raise PodKilled(f"killed during call {self.at}")
        return result


class CountingCheckpoints(FileCheckpoints):
    """FileCheckpoints that note each save as (new messages, results of the round so far)."""

    def __init__(self, workspace: Path, goal_uid: str) -> None:
        super().__init__(workspace, goal_uid)
        self.saves: list[tuple[int, int]] = []

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        self.saves.append((len(new_messages), len(counters["partial"])))
        return await super().save(iteration, new_messages, todos, counters)


class CrashingCheckpoints(FileCheckpoints):
    """FileCheckpoints that crash the loop right after the save `when(counters)` picks."""

    def __init__(self, workspace: Path, goal_uid: str, when: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(workspace, goal_uid)
        self.when = when

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        saved = await super().save(iteration, new_messages, todos, counters)
        if self.when(counters):
            raise Crash(f"crashed after the checkpoint of iteration {iteration}")
        return saved


class LosingCheckpoints(FileCheckpoints):
    """FileCheckpoints whose `lose`-th save finds the store out of step (a write it rejected,
    a second writer): nothing lands and the save answers False."""

    def __init__(self, workspace: Path, goal_uid: str, lose: int) -> None:
        super().__init__(workspace, goal_uid)
        self.lose, self.saves, self.replaced = lose, 0, 0

    async def save(self, iteration: int, new_messages: list[dict[str, Any]], todos: dict[str, Any],
                   counters: dict[str, Any]) -> bool:
        self.saves += 1
        if self.saves == self.lose:
            return False
        return await super().save(iteration, new_messages, todos, counters)

    async def replace(self, messages: list[dict[str, Any]]) -> None:
        self.replaced += 1
        await super().replace(messages)


@contextlib.asynccontextmanager
async def model(scenario: Any, max_retries: int = 0) -> AsyncIterator[tuple[ScriptedModelServer, Any]]:
    async with ScriptedModelServer(scenario) as server:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="test", max_retries=max_retries) as client:
            yield server, client


def make_loop(client: Any, workspace: Path, *, tool: Tool | None = None, budget: Budget | None = None,
              checkpoints: Any = None, link: MemoryLink | None = None, **config: Any) -> AgentLoop:
    registry = ToolRegistry([tool or Noop()])
    settings = {"model": MODEL, "max_tokens": 1024, "system": SYSTEM, "goal_key": GOAL, **config}
    return AgentLoop(client, LoopConfig(**settings), registry, ToolContext(workspace=workspace),
                     link or MemoryLink(), checkpoints or FileCheckpoints(workspace, "uid-1"),
                     budget or Budget(), TodoList())


def messages_requests(server: ScriptedModelServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/v1/messages"]


def call_turn(n: int, *ids: str, text: str | None = None) -> dict[str, Any]:
    """A scripted turn calling noop once per id, with inputs n, n+1, ..."""
    reply: list[dict[str, Any]] = [{"text": text}] if text else []
    reply += [{"tool_use": {"name": "noop", "input": {"n": n + i}, **({"id": i_d} if i_d else {})}}
              for i, i_d in enumerate(ids or ("",))]
    return {"reply": reply}


async def test_a_tool_loop_runs_every_call_and_succeeds(tmp_path: Path) -> None:
    tool, link = Noop(), MemoryLink()
    async with model(Scenario.tool_loop(turns=5, tool="noop", input={"n": 1})) as (server, client):
        loop = make_loop(client, tmp_path, tool=tool, link=link)
        outcome = await loop.run(TASK)
    assert outcome == Outcome(True, "Done after 4 calls to noop.")
    assert len(tool.calls) == 4 and loop.counters.tool_calls == 4
    assert loop.counters.iteration == 5 and len(messages_requests(server)) == 5
    assert link.status["iteration"] == 4 and link.status["tokens"]["total"] > 0
    saved = await FileCheckpoints(tmp_path, "uid-1").load()
    assert saved is not None and len(saved.messages) == 1 + 2 * 4 + 1


async def test_a_reply_cut_at_max_tokens_is_continued(tmp_path: Path) -> None:
    scenario = {"conversations": {"default": [
        {"reply": "The parser fails because", "stop_reason": "max_tokens"},
        {"expect": {"last_user_contains": "cut off at the output limit"}, "reply": "the lexer drops tabs. Fixed."},
    ]}}
    async with model(scenario) as (server, client):
        outcome = await make_loop(client, tmp_path).run(TASK)
    assert server.mismatches == []
    assert outcome.success and outcome.result == "the lexer drops tabs. Fixed."
    assert len(messages_requests(server)) == 2


async def test_a_refusal_ends_the_goal_for_good(tmp_path: Path) -> None:
    scenario = {"conversations": {"default": [{"reply": "I can't help with that.", "stop_reason": "refusal"}]}}
    async with model(scenario) as (_, client):
        outcome = await make_loop(client, tmp_path).run(TASK)
    assert outcome == Outcome(False, "I can't help with that.", "Refusal", retryable=False)


async def test_the_iteration_budget_stops_the_loop(tmp_path: Path) -> None:
    tool = Noop()
    async with model(Scenario.tool_loop(turns=20, tool="noop")) as (server, client):
        loop = make_loop(client, tmp_path, tool=tool, budget=Budget(max_iterations=3))
        outcome = await loop.run(TASK)
    assert (outcome.success, outcome.reason, outcome.retryable) == (False, "BudgetExhausted", False)
    assert "iteration budget spent: 3 of 3" in outcome.result
    assert len(tool.calls) == 3 and len(messages_requests(server)) == 3


async def test_the_token_budget_stops_the_loop(tmp_path: Path) -> None:
    async with model(Scenario.tool_loop(turns=20, tool="noop")) as (server, client):
        loop = make_loop(client, tmp_path, budget=Budget(max_tokens=2000))
        outcome = await loop.run(TASK)
    assert (outcome.success, outcome.reason) == (False, "BudgetExhausted")
    assert "token budget spent" in outcome.result and loop.counters.total >= 2000
    assert len(messages_requests(server)) == 2  # the system prompt alone is about 1300 tokens


async def test_a_small_context_is_compacted_and_the_goal_still_finishes(tmp_path: Path) -> None:
    tool = Noop(size=1200)  # about 300 tokens a result
    turns = [call_turn(i, text=f"Step {i}: checked module {i}; the failure is elsewhere.") for i in range(14)]
    scenario = {"conversations": {"default": [*turns, {"reply": "All tests pass."}]}}
    async with model(scenario) as (server, client):
        loop = make_loop(client, tmp_path, tool=tool, context_tokens=4000, compact_at=0.75)
        outcome = await loop.run(TASK)
    assert outcome.success and outcome.result == "All tests pass."
    requests = messages_requests(server)
    compactions = [i for i, r in enumerate(requests) if "Context is running out" in str(r.body["messages"][-1])]
    assert compactions, "no compaction request was sent"
    after = requests[compactions[0] + 1].body["messages"]
    assert after[0]["role"] == "user" and "Summary of the work so far" in str(after[0]["content"])
    assert all(count_tokens(r.body) < 4000 for r in requests)  # no prompt outgrew the context
    saved = await FileCheckpoints(tmp_path, "uid-1").load()
    assert saved is not None and saved.messages == loop.messages


async def test_every_request_has_at_most_four_cache_breakpoints_and_reads_the_cache(tmp_path: Path) -> None:
    scenario = {"conversations": {"default": [call_turn(0, "", "", ""), call_turn(3), call_turn(4, "", ""),
                                              {"reply": "done"}]}}
    async with model(scenario) as (server, client):
        loop = make_loop(client, tmp_path)
        outcome = await loop.run(TASK)
    assert outcome.success
    requests = messages_requests(server)
    assert all(r.status == 200 for r in requests)
    for r in requests:
        breakpoints = [b for b in prompt_blocks(r.body) if b.cache_ttl is not None]
        assert 1 <= len(breakpoints) <= 4, r.body
    assert loop.counters.cache_read > 0 and loop.counters.cache_write > 0


async def test_resuming_after_a_crash_repeats_no_tool_call(tmp_path: Path) -> None:
    # Two calls a turn with fixed ids; the pod dies after the first call of turn 3 was checkpointed.
    turns = [call_turn(2 * i, f"toolu_{i}a", f"toolu_{i}b") for i in range(5)]
    scenario = {"conversations": {"default": [*turns, {"reply": "All ten calls done."}]}, "follow_history": True}
    tool = Noop()
    crash_at = lambda counters: counters["iteration"] == 3 and len(counters["partial"]) == 1  # noqa: E731
    async with model(scenario) as (server, client):
        first = make_loop(client, tmp_path, tool=tool, checkpoints=CrashingCheckpoints(tmp_path, "uid-1", crash_at))
        with pytest.raises(Crash):
            await first.run(TASK)
        assert [c["n"] for c in tool.calls] == [0, 1, 2, 3, 4]
        second = make_loop(client, tmp_path, tool=tool, checkpoints=FileCheckpoints(tmp_path, "uid-1"))
        outcome = await second.run(TASK)
    assert outcome.success and outcome.result == "All ten calls done."
    assert [c["n"] for c in tool.calls] == list(range(10))  # each call exactly once, in order
    assert len(messages_requests(server)) == 6  # 3 before the crash, 3 after: no answer asked for twice
    assert second.counters.iteration == 6 and second.counters.tool_calls == 10


async def test_a_store_out_of_step_gets_the_whole_conversation_and_nothing_is_lost(tmp_path: Path) -> None:
    checkpoints = LosingCheckpoints(tmp_path, "uid-1", lose=2)
    async with model(Scenario.tool_loop(turns=4, tool="noop")) as (_, client):
        loop = make_loop(client, tmp_path, checkpoints=checkpoints)
        assert (await loop.run(TASK)).success
    assert checkpoints.replaced == 1
    saved = await FileCheckpoints(tmp_path, "uid-1").load()
    assert saved is not None and saved.messages == loop.messages
    assert saved.iteration == loop.counters.iteration


class FillsTheDisk(Noop):
    """Noop whose second call leaves no space for the checkpoint's next write (/dev/full where the
    store writes its state: every write there fails with ENOSPC)."""

    async def run(self, input: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        result = await super().run(input, ctx)
        if len(self.calls) == 2:
            (ctx.workspace / ".overseer" / "checkpoints" / "uid-1" / "state.tmp").symlink_to("/dev/full")
        return result


async def test_a_checkpoint_that_finds_the_workspace_full_ends_the_goal_for_good_with_workspace_full(
        tmp_path: Path) -> None:
    tool, link = FillsTheDisk(), MemoryLink()
    async with model(Scenario.tool_loop(turns=5, tool="noop", input={"n": 1})) as (server, client):
        outcome = await make_loop(client, tmp_path, tool=tool, link=link).run(TASK)
    assert (outcome.success, outcome.reason, outcome.retryable) == (False, "WorkspaceFull", False)
    assert outcome.result.startswith(f"the workspace {tmp_path} is full (")
    assert "checkpoint of iteration 2 could not be written" in outcome.result
    assert len(tool.calls) == 2 and len(messages_requests(server)) == 2  # it stopped there
    # The last save before, whole: up to the answer that asked for the second call (saved before it ran).
    saved = await FileCheckpoints(tmp_path, "uid-1").load()
    assert saved is not None and saved.iteration == 2 and len(saved.messages) == 1 + 2 + 1
    assert saved.messages[-1]["role"] == "assistant"


async def test_a_model_outage_ends_retryable_with_model_unavailable(tmp_path: Path) -> None:
    scenario = {"conversations": {"default": ["never sent"]}, "faults": {"every": 1, "status": 529}}
    async with model(scenario, max_retries=0) as (server, client):
        loop = make_loop(client, tmp_path, breaker_failures=3, breaker_base_delay=0.001)
        outcome = await loop.run(TASK)
    assert (outcome.success, outcome.reason, outcome.retryable) == (False, "ModelUnavailable", True)
    assert "failed 3 times in a row" in outcome.result
    assert [r.status for r in messages_requests(server)] == [529, 529, 529]


@pytest.mark.parametrize("side_effects, saves", [
    # task and answer, first call, round; answer, round; final answer
    (True, [(2, 0), (0, 1), (1, 0), (1, 0), (1, 0), (1, 0)]),
    # task, answer and round; answer and round; final answer
    (False, [(3, 0), (2, 0), (1, 0)]),
])
async def test_a_round_of_calls_without_side_effects_is_saved_once_with_its_answer(
        tmp_path: Path, side_effects: bool, saves: list[tuple[int, int]]) -> None:
    tool = Noop()
    tool.side_effects = side_effects
    checkpoints = CountingCheckpoints(tmp_path, "uid-1")
    scenario = {"conversations": {"default": [call_turn(0, "", ""), call_turn(2), {"reply": "done"}]}}
    async with model(scenario) as (_, client):
        outcome = await make_loop(client, tmp_path, tool=tool, checkpoints=checkpoints).run(TASK)
    assert outcome.success and len(tool.calls) == 3
    assert checkpoints.saves == saves
    saved = await FileCheckpoints(tmp_path, "uid-1").load()
    assert saved is not None and len(saved.messages) == 1 + 2 * 2 + 1


def two_calls_then_done() -> dict[str, Any]:
    turns = [call_turn(0, "toolu_0"), call_turn(1, "toolu_1")]
    return {"conversations": {"default": [*turns, {"reply": "Both calls done."}]}, "follow_history": True}


async def test_a_crash_during_a_call_with_side_effects_resumes_with_the_answer_saved_before_it(
        tmp_path: Path) -> None:
    tool = Killed(at=1, side_effects=True)
    async with model(two_calls_then_done()) as (server, client):
        with pytest.raises(PodKilled):
            await make_loop(client, tmp_path, tool=tool).run(TASK)
        saved = await FileCheckpoints(tmp_path, "uid-1").load()
        assert saved is not None and saved.messages[-1]["role"] == "assistant"  # the answer, before its call ran
        second = make_loop(client, tmp_path, tool=tool)
        outcome = await second.run(TASK)
    assert outcome.success and outcome.result == "Both calls done."
    assert len(messages_requests(server)) == 3  # the answer of turn 2 was not asked for again
    assert [c["n"] for c in tool.calls] == [0, 1, 1]  # only the call cut off runs again
    assert second.counters.iteration == 3 and second.counters.tool_calls == 2


async def test_a_resume_note_reaches_the_model_after_the_results_of_the_interrupted_call(tmp_path: Path) -> None:
    # The workspace was lost with the pod: the model hears it once, after the tool result the
    # resumed attempt owed it (a text between a call and its result would be refused by the API).
    tool = Killed(at=1, side_effects=True)
    note = "Files written by earlier attempts are gone"
    async with model(two_calls_then_done()) as (server, client):
        with pytest.raises(PodKilled):
            await make_loop(client, tmp_path, tool=tool).run(TASK)
        second = make_loop(client, tmp_path, tool=tool)
        second.resume_note = note
        assert (await second.run(TASK)).success
    last = messages_requests(server)[-1].body["messages"]
    noted = [i for i, m in enumerate(last) for b in m["content"] if isinstance(b, dict) and note in b.get("text", "")]
    assert len(noted) == 1
    assert last[noted[0] - 1]["role"] == "user" and last[noted[0] - 1]["content"][0]["type"] == "tool_result"


async def test_a_crash_during_a_call_without_side_effects_asks_the_model_again(tmp_path: Path) -> None:
    tool = Killed(at=1, side_effects=False)
    async with model(two_calls_then_done()) as (server, client):
        with pytest.raises(PodKilled):
            await make_loop(client, tmp_path, tool=tool).run(TASK)
        saved = await FileCheckpoints(tmp_path, "uid-1").load()
        assert saved is not None and len(saved.messages) == 3  # the task and turn 1; turn 2 was never saved
        second = make_loop(client, tmp_path, tool=tool)
        outcome = await second.run(TASK)
    assert outcome.success and outcome.result == "Both calls done."
    assert len(messages_requests(server)) == 4  # turn 2 asked for twice, and nothing else
    assert [c["n"] for c in tool.calls] == [0, 1, 1]
    assert second.counters.iteration == 3 and second.counters.tool_calls == 2
    final = await FileCheckpoints(tmp_path, "uid-1").load()
    assert final is not None and final.messages == second.messages and len(final.messages) == 1 + 2 * 2 + 1


async def test_a_call_that_waits_for_a_person_has_its_answer_saved_first(tmp_path: Path) -> None:
    class Approving(MemoryLink):
        """Approves at once, noting what the checkpoint held when the request went out."""

        def __init__(self) -> None:
            super().__init__()
            self.saved_at_request: list[dict[str, Any]] = []

        def decision(self, approval_id: str) -> tuple[str, str] | None:
            return ("approved", "")

        async def report(self, **fields: Any) -> None:
            if fields.get("pendingApprovals"):
                saved = await FileCheckpoints(tmp_path, "uid-1").load()
                self.saved_at_request = saved.messages if saved else []
            await super().report(**fields)

    tool, link = Noop(), Approving()
    tool.side_effects, tool.risk = False, "high"
    async with model(two_calls_then_done()) as (_, client):
        loop = make_loop(client, tmp_path, tool=tool, link=link)
        outcome = await loop.run(TASK)
    assert outcome.success and len(tool.calls) == 2
    assert link.saved_at_request and link.saved_at_request[-1]["role"] == "assistant"
    assert link.saved_at_request[-1]["content"][0]["id"] == "toolu_1"


class Denying(MemoryLink):
    """A person who denies every call, noting each approval request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []

    def decision(self, approval_id: str) -> tuple[str, str] | None:
        return ("denied", "no code execution here")

    async def report(self, **fields: Any) -> None:
        self.requests += fields.get("pendingApprovals") or []
        await super().report(**fields)


INLINE_CODE = "python3 -c 'open(\"ran.txt\", \"w\").write(\"ran\")'"


def inline_code_then_done() -> dict[str, Any]:
    call = {"reply": [{"tool_use": {"name": "bash", "input": {"command": INLINE_CODE}, "id": "toolu_py"}}]}
    return {"conversations": {"default": [call, {"reply": "Done."}]}, "follow_history": True}


@pytest.mark.parametrize("code_execution, waits", [("RequiresApproval", True), ("Allowed", False)])
async def test_inline_python_waits_for_a_person_under_the_default_policy_unless_the_agent_allows_code(
        tmp_path: Path, code_execution: str, waits: bool) -> None:
    link = Denying()
    async with model(inline_code_then_done()) as (server, client):
        loop = AgentLoop(client, LoopConfig(model=MODEL, max_tokens=1024, system=SYSTEM, goal_key=GOAL),
                         ToolRegistry([BashTool()]), ToolContext(workspace=tmp_path, code_execution=code_execution),
                         link, FileCheckpoints(tmp_path, "uid-1"), Budget(), TodoList())
        outcome = await loop.run(TASK)
    assert outcome.success
    assert (tmp_path / "ran.txt").exists() is not waits
    if waits:
        [request] = link.requests
        assert request["detail"] == INLINE_CODE
        assert request["summary"] == "bash (high risk): python3 -c runs inline code"
        result = messages_requests(server)[-1].body["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["is_error"] and result["content"].startswith("A person denied this call: no code execution")
    else:
        assert link.requests == []


def agent_sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_pods_metrics_count_iterations_tool_calls_checkpoints_and_model_errors(tmp_path: Path) -> None:
    before = {name: agent_sample(name) for name in (
        "overseer_agent_iterations_total", "overseer_agent_model_call_duration_seconds_count",
        "overseer_agent_checkpoint_duration_seconds_count")}
    calls = agent_sample("overseer_agent_tool_calls_total", tool="noop", risk="low")
    async with model(Scenario.tool_loop(turns=3, tool="noop", input={"n": 1})) as (_, client):
        await make_loop(client, tmp_path).run(TASK)
    assert agent_sample("overseer_agent_tool_calls_total", tool="noop", risk="low") - calls == 2
    assert agent_sample("overseer_agent_iterations_total") - before["overseer_agent_iterations_total"] == 3
    assert agent_sample("overseer_agent_model_call_duration_seconds_count") \
        - before["overseer_agent_model_call_duration_seconds_count"] == 3
    assert agent_sample("overseer_agent_checkpoint_duration_seconds_count") \
        > before["overseer_agent_checkpoint_duration_seconds_count"]

    errors = agent_sample("overseer_agent_model_call_errors_total", status="529")
    scenario = {"conversations": {"default": ["never sent"]}, "faults": {"every": 1, "status": 529}}
    async with model(scenario) as (_, client):
        await make_loop(client, tmp_path / "outage", breaker_failures=2, breaker_base_delay=0.001).run(TASK)
    assert agent_sample("overseer_agent_model_call_errors_total", status="529") - errors == 2
