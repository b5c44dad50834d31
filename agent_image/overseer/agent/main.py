"""`overseer-agent`: what a Goal's pod runs. Loads the Goal, its Agent and Capabilities, runs
the loop, reports the outcome, and exits with one of the goal pod contract's codes
(overseer.contract.ExitCode: succeeded, failed and worth retrying, or failed for good)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from overseer.api import API_VERSION, Agent, Budget as BudgetSpec, Capability, Goal, parse_duration
from overseer import live, modifications
from overseer.contract import ExitCode
from overseer.kube import Kube, path
from overseer.kubeconfig import pod_credentials

from . import backoff, warm, workspace
from .capability_stats import CallStats
from .capability_tools import capability_tool, resolve_headers
from .checkpoint_file import FileCheckpoints
from .config import AgentSettings
from .goal_link import GoalLink
from .health import HealthServer
from .kube_client import PodKube
from .loop import AgentLoop, Budget, LoopConfig, Outcome
from overseer.ratelimit import RateLimiter
from .tools import default_registry
from .tools.base import ToolContext, ToolError, ToolRegistry
from .tools.shell import journal
from .tools.selfmod import ProposeLesson, ProposeScriptTool, confirmer, load_approved, register_approved
from .tools.knowledge_search import SearchKnowledge
from .tools.subgoal import ParentGoal, SpawnSubgoal, TokenLedger
from .tools.todo import TodoList

if TYPE_CHECKING:  # psycopg is imported only when the knowledge base is configured
    from .knowledge import KnowledgeBase

logger = logging.getLogger("overseer.agent")

KNOWLEDGE_FLUSH_SECONDS = 300.0
"""How long a goal that ends while PostgreSQL is away keeps its pod to store its experience, the
decisions made and its last checkpoint (queued meanwhile): nothing reads its spool after it."""

EVENTS_FLUSH_SECONDS = 60.0
"""How long a goal that ends while Redis is away keeps its pod to deliver its last live events, its
`end` among them (buffered meanwhile): they are in this process's memory only."""

GUIDANCE = """You work autonomously on one goal inside a Kubernetes pod. Your working directory is
the goal's workspace; file tools and bash run there. Keep a TODO list with the todo tool for any
goal of more than a couple of steps and keep it current. When the goal is done, answer with a
short report of what you did and the result, without calling a tool."""


def system_prompt(agent: Agent, lessons: list[str], approved: list[str] | None = None) -> str:
    parts = []
    if agent.spec.role:
        parts.append(f"You are: {agent.spec.role}.")
    if agent.spec.system_prompt:
        parts.append(agent.spec.system_prompt)
    parts.append(GUIDANCE)
    if approved:
        parts.append("Lessons approved for you by the people who run you:\n" + "\n".join(f"- {x}" for x in approved))
    if lessons:
        parts.append("Lessons from earlier goals (use what applies):\n" + "\n".join(f"- {x}" for x in lessons))
    return "\n\n".join(parts)


async def load_capabilities(kube: Kube, ns: str, names: list[str]) -> list[Capability]:
    """The named Capabilities and, transitively, those they require (one that is gone is skipped:
    the Agent's CapabilitiesReady condition says so)."""
    found: dict[str, Capability] = {}
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        raw = await kube.get(path(API_VERSION, "capabilities", ns, name))
        if raw is not None:
            found[name] = Capability.model_validate(raw)
            todo.extend(found[name].spec.requires)
    return list(found.values())


async def open_mcp_servers(caps: list[Capability], registry: ToolRegistry, stats: CallStats) -> list[Any]:
    """One session per MCP capability, its tools registered. The SDK is imported only here: it
    costs seconds of start time that agents without an MCP server should not pay."""
    if not caps:
        return []
    from .mcp_tools import McpSession

    sessions = []
    for cap in caps:
        assert cap.spec.mcp is not None
        try:
            headers = resolve_headers(cap, cap.spec.mcp.headers)
        except ToolError as exc:
            logger.warning("%s: its tools are not offered", exc)
            continue
        sessions.append(McpSession(cap, registry, headers, stats))
    await asyncio.gather(*(s.start() for s in sessions))
    return sessions


def effective_budget(agent: Agent, goal: Goal) -> Budget:
    """The goal's budget overrides field by field; the agent's fills the rest."""
    a, g = agent.spec.budget, goal.spec.budget or BudgetSpec()
    wall = g.max_wall_clock or a.max_wall_clock
    return Budget(max_tokens=g.max_tokens_per_goal or a.max_tokens_per_goal,
                  max_iterations=g.max_iterations_per_goal or a.max_iterations_per_goal,
                  max_seconds=parse_duration(wall).total_seconds() if wall else None)


async def run(settings: AgentSettings) -> int:
    async def login() -> Any:
        return pod_credentials()

    kube = PodKube(login, "overseer-agent", pool_size=4)
    # Made first: in a warm pod, the model client is ready before a goal claims the pod.
    client = backoff.model_client()
    if not settings.goal_name:
        assert settings.pod_name is not None  # AgentSettings requires one of the two
        settings.goal_name = await warm.wait_for_goal(kube, settings.goal_namespace, settings.pod_name,
                                                      settings.agent_name)
        logger.info("pod %s claimed by goal %s/%s", settings.pod_name, settings.goal_namespace, settings.goal_name)
    servers: list[Any] = []
    link = GoalLink(kube, settings.goal_namespace, settings.goal_name, settings.heartbeat_seconds)
    health = HealthServer(settings.health_port, stale_after=max(60.0, settings.heartbeat_seconds * 6))
    try:
        goal = Goal.model_validate(await link.load())
        ns = settings.goal_namespace
        agent_raw = await kube.get(path(API_VERSION, "agents", ns, settings.agent_name))
        if agent_raw is None:
            raise LookupError(f"Agent {ns}/{settings.agent_name} does not exist")
        agent = Agent.model_validate(agent_raw)
        capabilities = await load_capabilities(kube, ns, agent.spec.capabilities)
        logger.info("goal %s/%s: loaded Goal, Agent %s and %d capabilities", ns, goal.name, agent.name,
                    len(capabilities))

        settings.workspace.mkdir(parents=True, exist_ok=True)
        uid = goal.metadata.get("uid") or goal.name
        todos = TodoList()
        ctx = ToolContext(workspace=settings.workspace, env=_tool_env(settings), code_execution=agent.spec.code_execution,
                          tools_socket=settings.tools_socket, goal_uid=uid,
                          extras={"todos": todos})
        registry = default_registry(todos)
        stats = CallStats(lambda entries: link.report(capabilityCalls=entries))
        stats.restore([c.to_api() for c in goal.status.capability_calls])  # an earlier attempt's
        for cap in capabilities:
            if cap.spec.mcp is None:
                registry.register(capability_tool(cap, stats))
        servers = await open_mcp_servers([c for c in capabilities if c.spec.mcp is not None], registry, stats)

        source = goal.spec.workspace_from
        start = workspace.prepare(settings.workspace, uid, settings.workspace_volume, settings.workspace_from,
                                  settings.workspace_from_mode, source.goal if source else "")
        # Approved self-modifications: lessons for the prompt, script tools (registered last).
        approved = await load_approved(kube, ns, agent.name)
        confirm = confirmer(kube, ns, agent.name)
        registry.register(ProposeLesson(uid, agent.name, confirm))
        registry.register(ProposeScriptTool(uid, agent.name, confirm, taken=registry.names,
                                            network_allowed=any(cap.spec.egress for cap in capabilities)))
        kb: KnowledgeBase | None = None
        lessons = []
        checkpoints: Any = FileCheckpoints(settings.workspace, uid)
        if settings.database_url:
            from .knowledge import KnowledgeBase
            from .knowledge_report import BacklogReporter

            backlog = BacklogReporter(kube, link, link.goal)
            kb = KnowledgeBase(settings.database_url, namespace=ns,
                               spool=settings.workspace / ".overseer" / f"kb-spool-{uid}.jsonl", on_backlog=backlog)
            await kb.open()  # down for now: writes queue and replay when it returns
            checkpoints = kb.for_goal(uid)
            lessons = await kb.lessons(goal.spec.description, agent.name)
            registry.register(SearchKnowledge(kb, agent.name))
        redis = live.connect(settings.redis_url)
        events = live.EventStream(redis, ns, goal.name)
        steering = live.SteeringQueue(redis, ns, goal.name)
        limiter = None
        if settings.requests_per_minute and settings.tokens_per_minute:
            limiter = RateLimiter(redis, os.environ.get("ANTHROPIC_API_KEY", ""),
                                       requests_per_minute=settings.requests_per_minute,
                                       tokens_per_minute=settings.tokens_per_minute)

        async def publish(kind: str, data: dict[str, Any]) -> None:
            await events.publish({"type": kind, "data": data})

        poller = live.SteeringPoller(steering)
        if redis is not None:
            poller.start()

        async def on_decision(approval_id: str, tool: str, summary: str, verdict: str, reason: str) -> None:
            if kb is not None:
                by, at = link.decided_by(approval_id)
                kind = modifications.KIND if tool in (ProposeLesson.name, ProposeScriptTool.name) else "toolCall"
                await kb.record_decision(uid, approval_id, kind, summary, verdict, by, at, reason)

        config = LoopConfig(
            model=agent.spec.model.name, max_tokens=agent.spec.model.max_tokens,
            system=system_prompt(agent, [lesson.text for lesson in lessons], approved.lessons),
            goal_key=f"{ns}/{goal.name}",
            min_approval_risk=goal.spec.approval_policy.min_risk,
            context_tokens=settings.context_tokens, compact_at=settings.compact_at)
        budget = effective_budget(agent, goal)
        if settings.max_subgoal_depth > 0:
            # Sub-goals are charged to this goal's token budget, including those of an earlier attempt.
            ledger = TokenLedger(budget, used=lambda: loop.counters.total)
            subgoals = SpawnSubgoal(kube, ParentGoal(ns, goal.name, goal.metadata.get("uid", ""), goal.spec.parent,
                                                     goal.spec.priority, goal.spec.approval_policy.to_api()),
                                    agent.name, ledger, max_depth=settings.max_subgoal_depth)
            registry.register(subgoals)
            await subgoals.restore()
        register_approved(registry, approved.tools)
        loop = AgentLoop(client, config, registry, ctx, link, checkpoints, budget, todos,
                         publish=publish, steering=poller.take, rate_limit=limiter, on_decision=on_decision,
                         resume_note=start.resume_note)
        await health.start(lambda: loop.counters.iteration)
        link.start()
        started = time.monotonic()
        task = goal.spec.description + (f"\n\n{start.task_note}" if start.task_note else "")
        outcome = await loop.run(task)
        duration = time.monotonic() - started
        logger.info("goal %s/%s finished: success=%s reason=%s in %.1fs", ns, goal.name, outcome.success,
                    outcome.reason, duration)
        await link.report(result=outcome.result[:4000], failureReason=None if outcome.success else outcome.reason,
                          iteration=loop.counters.iteration, tokens=loop.counters.tokens(),
                          progress=todos.progress(loop.counters.iteration))
        await poller.stop()
        await link.flush()
        await loop.flush_events()
        await publish("end", {"success": outcome.success, "result": outcome.result[:2000]})
        # Alongside the knowledge-base writes: with both stores away the pod waits the longer time, not the sum.
        delivered = asyncio.create_task(events.drain(EVENTS_FLUSH_SECONDS), name="events-drain")
        if kb is not None:
            if outcome.reason != "Cancelled":
                from .knowledge import Action, Experience

                await kb.record_experience(Experience(
                    goal_uid=uid, goal_name=goal.name, namespace=ns, agent=agent.name,
                    description=goal.spec.description, success=outcome.success, outcome=outcome.result[:4000],
                    actions=[Action(tool, note) for tool, note in loop.actions], tokens=loop.counters.total,
                    duration_seconds=duration, error=None if outcome.success else outcome.reason))
                if lessons:
                    await kb.record_lesson_use([lesson.id for lesson in lessons], outcome.success, goal_uid=uid)
            if not await kb.flush(timeout=10):
                # Its spool is not read again once the goal is over: wait for PostgreSQL here.
                logger.warning("goal %s/%s: %d knowledge-base writes wait for PostgreSQL (up to %.0f s more)",
                               ns, goal.name, kb.pending_writes, KNOWLEDGE_FLUSH_SECONDS)
                if not await kb.flush(timeout=KNOWLEDGE_FLUSH_SECONDS):
                    logger.error("goal %s/%s: %d knowledge-base writes (experience, decisions, checkpoint) were "
                                 "not stored: PostgreSQL stayed away", ns, goal.name, kb.pending_writes)
            await kb.close()
            await backlog.stop()
        if not await delivered:
            logger.error("goal %s/%s: %d live events, its end among them, were not delivered: Redis stayed away",
                         ns, goal.name, events.buffered)
        code = exit_code(outcome)
        if code != ExitCode.RETRY:
            journal.forget(settings.workspace, uid)
        return code
    finally:
        for server in servers:
            await server.close()
        await link.stop()
        await health.stop()
        await kube.close()


def exit_code(outcome: Outcome) -> ExitCode:
    if outcome.success:
        return ExitCode.SUCCEEDED
    return ExitCode.RETRY if outcome.retryable else ExitCode.GAVE_UP


def _tool_env(settings: AgentSettings) -> dict[str, str]:
    """The environment of commands the agent runs: no API keys or cluster credentials."""
    hidden = ("ANTHROPIC_", "OVERSEER_", "KUBECONFIG", "KUBERNETES_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}
    env["HOME"] = str(settings.workspace)
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    fields = ", ".join(f"OVERSEER_{name.upper()}" for name in AgentSettings.model_fields)
    p = argparse.ArgumentParser(
        prog="overseer-agent", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Work on one Goal: what the operator runs in each goal pod. Configured by the pod's "
                    "environment, which the operator sets; takes no arguments.",
        epilog=f"environment: {fields}; ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (read by the anthropic SDK); "
               f"KUBECONFIG or the pod's service account.\n"
               f"exit codes: {ExitCode.SUCCEEDED:d} succeeded, {ExitCode.RETRY:d} failed (worth retrying), "
               f"{ExitCode.GAVE_UP:d} failed for good (budget, refusal, cancelled, bad configuration)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentSettings()
    except ValidationError as e:
        print(f"overseer-agent: invalid configuration (OVERSEER_* environment, set by the operator): {e}",
              file=sys.stderr)
        return ExitCode.GAVE_UP
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(settings))
    return ExitCode.RETRY


if __name__ == "__main__":
    sys.exit(main())
