"""`kubectl overseer`: a Goal's status, its approvals, steering, live events and tree.

kubectl runs any `kubectl-overseer` found on PATH as `kubectl overseer ...`. Everything here
goes through the Kubernetes API with the user's own kubeconfig (approvals are annotations the
user sets, recorded under the field manager `kubectl-overseer`), and through Redis for the
live event stream and the steering queue when a Redis URL is given.

The formatting functions are pure (a Goal or an event in, text out); the commands around them
only fetch, patch and print.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from redis.exceptions import RedisError

from overseer import approvals, live
from overseer.api import API_VERSION, Phase, queue_key
from overseer.kube import ApiError, Kube, StaticCredentials, load_credentials, path

FIELD_MANAGER = "kubectl-overseer"
REDIS_ENV = "OVERSEER_REDIS_URL"
TERMINAL_PHASES = {p.value for p in Phase if p.terminal}
STEERING_PREFIX = "Steering from the person who owns this goal: "


class CliError(Exception):
    """A failure to report in one message (exit code 1)."""


# --------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """argparse that exits 1 on a usage error, as kubectl does, instead of 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-n", "--namespace", default=default,
                        help="namespace of the Goal (default: the kubeconfig context's, else default)")
    parser.add_argument("--kubeconfig", default=default,
                        help="kubeconfig file to use (default: $KUBECONFIG, else ~/.kube/config)")


def _redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL", default=None,
                        help=f"Redis of the Overseer installation (default: ${REDIS_ENV})")


def build_parser() -> argparse.ArgumentParser:
    """The `kubectl overseer` command line: global options work before or after the subcommand."""
    parser = _Parser(prog="kubectl overseer",
                     description="Watch and steer Overseer Goals: status, approvals, steering, live events.")
    _common_options(parser, None)
    # Options given after the subcommand land here too; SUPPRESS keeps an absent one from
    # overwriting a value given before the subcommand.
    common = _Parser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("status", parents=[common], help="phase, progress, tokens and pending approvals of a Goal; "
                                                        "without GOAL, what each Agent spent (model gateway)")
    p.add_argument("goal", metavar="GOAL", nargs="?")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="without GOAL: the Agents of every namespace")

    p = sub.add_parser("approve", parents=[common], help="approve a pending request of a Goal")
    p.add_argument("goal", metavar="GOAL")
    p.add_argument("id", metavar="ID", nargs="?", help="the approval id (default: the only pending one)")

    p = sub.add_parser("deny", parents=[common], help="deny a pending request of a Goal")
    p.add_argument("goal", metavar="GOAL")
    p.add_argument("id", metavar="ID", nargs="?", help="the approval id (default: the only pending one)")
    p.add_argument("--reason", metavar="TEXT", default=None, help="why, as the agent will read it")

    p = sub.add_parser("steer", parents=[common], help="send guidance to the agent working on a Goal")
    p.add_argument("goal", metavar="GOAL")
    p.add_argument("text", metavar="TEXT")
    _redis_option(p)

    p = sub.add_parser("logs", parents=[common], help="the live event stream of a Goal")
    p.add_argument("goal", metavar="GOAL")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events until the goal ends")
    p.add_argument("--from-start", action="store_true", help="begin at the goal's first event")
    p.add_argument("--tail", type=int, default=20, metavar="N",
                   help="without --from-start, how many of the latest events to show (default 20)")
    _redis_option(p)

    p = sub.add_parser("tree", parents=[common], help="a Goal with its sub-goals and dependencies")
    p.add_argument("goal", metavar="GOAL")
    return parser


def default_namespace(kubeconfig: str | None = None) -> str:
    """The namespace of the kubeconfig's current context, else the pod's own, else "default"."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig or os.environ.get("KUBECONFIG"))
        namespace = ((active or {}).get("context") or {}).get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, OSError, ValueError):
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
                return f.read().strip() or "default"
        except OSError:
            pass
    return "default"


def redis_url(given: str | None) -> str | None:
    """--redis, else $OVERSEER_REDIS_URL, else None."""
    return given or os.environ.get(REDIS_ENV) or None


def redact(url: str) -> str:
    """url without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***" if parts.username else ":***"
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------------------------
# Approvals


def goal_ref(namespace: str, name: str) -> str:
    return f"Goal {namespace}/{name}"


def pending_approvals(goal: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((goal.get("status") or {}).get("pendingApprovals") or [])


def approval_commands(namespace: str, name: str, approval_id: str) -> tuple[str, str]:
    """The exact `kubectl overseer` commands that approve and deny one request."""
    tail = f"{shlex.quote(name)} {shlex.quote(approval_id)} -n {shlex.quote(namespace)}"
    return f"kubectl overseer approve {tail}", f"kubectl overseer deny {tail} --reason TEXT"


def choose_approval(goal: Mapping[str, Any], approval_id: str | None) -> str:
    """The approval to decide: approval_id if it is pending, else the only pending one."""
    meta = goal.get("metadata") or {}
    ref = goal_ref(meta.get("namespace", ""), meta.get("name", ""))
    pending = pending_approvals(goal)
    ids = [p.get("id", "") for p in pending]
    listing = "; ".join(f"{p.get('id')} ({p.get('summary', '')})" for p in pending)
    if approval_id is not None:
        if approval_id in ids:
            return approval_id
        decided = next((d for d in (goal.get("status") or {}).get("decisions") or [] if d.get("id") == approval_id),
                       None)
        if decided is not None:
            raise CliError(f"{ref}: approval {approval_id} was already {decided.get('decision')} "
                           f"by {decided.get('decidedBy')} at {decided.get('decidedAt')}")
        if not ids:
            raise CliError(f"{ref}: approval {approval_id} is not pending, and nothing is "
                           f"(phase {_phase(goal)}); kubectl overseer status {meta.get('name')} shows the goal")
        raise CliError(f"{ref}: approval {approval_id} is not pending; pending: {listing}")
    if not ids:
        raise CliError(f"{ref} has no pending approvals (phase {_phase(goal)}); "
                       f"kubectl overseer status {meta.get('name')} shows the goal")
    if len(ids) > 1:
        raise CliError(f"{ref} has {len(ids)} pending approvals, name one: {listing}")
    return ids[0]


def approve_patch(approval_id: str) -> dict[str, Any]:
    """The merge patch `kubectl annotate --overwrite goal/NAME overseer.dev/approve=ID` sends."""
    return {"metadata": {"annotations": {approvals.APPROVE: approval_id}}}


def deny_patch(approval_id: str, reason: str | None) -> dict[str, Any]:
    """Deny approval_id; without a reason an earlier denial's reason is removed, not reused."""
    return {"metadata": {"annotations": {approvals.DENY: approval_id, approvals.DENY_REASON: reason or None}}}


def steer_patch(text: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {approvals.STEER: text}}}


# --------------------------------------------------------------------------------------------
# Formatting


def _phase(goal: Mapping[str, Any]) -> str:
    return (goal.get("status") or {}).get("phase") or "Pending"


def _parse_time(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        value = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def age(ts: str | None, now: datetime) -> str:
    """How long ago ts was, as kubectl prints ages: 45s, 3m12s, 2h5m, 4d3h."""
    then = _parse_time(ts)
    if then is None:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds}s" if minutes < 10 and seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _when(ts: str | None, now: datetime) -> str:
    ago = age(ts, now)
    return f"{ts} ({ago} ago)" if ago else (ts or "")


def one_line(text: Any, limit: int = 160) -> str:
    """text on one line, whitespace collapsed, cut at limit characters."""
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def format_tokens(tokens: Mapping[str, Any] | None) -> str:
    t = tokens or {}
    return (f"{t.get('total', 0):,} total (input {t.get('input', 0):,}, output {t.get('output', 0):,}, "
            f"cache read {t.get('cacheRead', 0):,}, cache write {t.get('cacheWrite', 0):,})")


def queue_position(goal: Mapping[str, Any], goals: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
    """(place from 1, length) of a Queued goal in its agent's queue, in the operator's order.
    Worked out here from a list, not kept in status: every start would rewrite every queued goal."""
    st = goal.get("status") or {}
    if st.get("phase") != Phase.QUEUED.value or not st.get("agent"):
        return None
    queue = sorted((g for g in goals if (g.get("status") or {}).get("phase") == Phase.QUEUED.value
                    and (g.get("status") or {}).get("agent") == st["agent"]), key=queue_key)
    names = [g["metadata"]["name"] for g in queue]
    name = goal["metadata"]["name"]
    return (names.index(name) + 1, len(names)) if name in names else None


def format_status(goal: Mapping[str, Any], now: datetime | None = None,
                  queue: tuple[int, int] | None = None) -> str:
    """What `kubectl overseer status` prints for a Goal object (as the API returns it), with its
    place in the queue when it waits in one."""
    now = now or datetime.now(timezone.utc)
    meta = goal.get("metadata") or {}
    spec = goal.get("spec") or {}
    st = goal.get("status") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    rows: list[tuple[str, str]] = [
        ("Goal", f"{namespace}/{name}"),
        ("Description", one_line(spec.get("description"), 100)),
        ("Phase", _phase(goal) + ("" if st else " (not reconciled yet)")),
    ]
    if st.get("message"):
        rows.append(("Message", one_line(st["message"], 200)))
    if st.get("failureReason"):
        rows.append(("Failure", st["failureReason"]))
    agent = st.get("agent") or (spec.get("agentRef") or {}).get("name")
    if agent:
        rows.append(("Agent", agent))
    if spec.get("parent"):
        rows.append(("Parent", spec["parent"]))
    if st.get("attempt"):
        pod = f", pod {st['pod']}" if st.get("pod") else ""
        rows.append(("Attempt", f"{st['attempt']} of {1 + int(spec.get('maxRetries', 1))}{pod}"))
    rows.append(("Iteration", str(st.get("iteration", 0))))
    rows.append(("Tokens", format_tokens(st.get("tokens"))))
    if st.get("cost"):
        cost = st["cost"]
        usd, own = float(cost.get("usd") or 0), float(cost.get("ownUsd") or 0)
        subgoals = f", ${usd - own:.4f} of it by sub-goals" if usd - own >= 0.00005 else ""
        rows.append(("Cost", f"${usd:.4f} in {cost.get('requests', 0)} model calls (model gateway){subgoals}"))
    if st.get("progress"):
        rows.append(("Progress", st["progress"]))
    if st.get("lastTool"):
        rows.append(("Last tool", one_line(st["lastTool"], 200)))
    if st.get("waitingFor"):
        rows.append(("Waiting for", ", ".join(st["waitingFor"])))
    if queue:
        rows.append(("Queue", f"{queue[0]} of {queue[1]} for agent {agent}"))
    if st.get("retryAt"):
        rows.append(("Retry at", st["retryAt"]))
    if st.get("heartbeat") and _phase(goal) not in TERMINAL_PHASES:
        rows.append(("Heartbeat", _when(st["heartbeat"], now)))
    if st.get("startedAt"):
        rows.append(("Started", _when(st["startedAt"], now)))
    if st.get("completedAt"):
        rows.append(("Completed", _when(st["completedAt"], now)))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in rows]

    pending = pending_approvals(goal)
    if pending:
        lines += ["", f"Pending approvals ({len(pending)}):"]
        for p in pending:
            approve, deny = approval_commands(namespace, name, p.get("id", ""))
            requested = age(p.get("requestedAt"), now)
            lines.append(f"  {p.get('id')}  {p.get('kind', '')}{f', asked {requested} ago' if requested else ''}")
            lines.append(f"    {one_line(p.get('summary'), 200)}")
            if p.get("detail"):
                lines.append(f"    detail:  {one_line(p['detail'], 200)}")
            lines.append(f"    approve: {approve}")
            lines.append(f"    deny:    {deny}")
    decisions = st.get("decisions") or []
    if decisions:
        lines += ["", f"Decisions ({len(decisions)}):"]
        for d in decisions:
            unverified = "" if d.get("verified") else " (unverified: the admission policies were missing)"
            lines.append(f"  {d.get('id')}  {d.get('decision')} by {d.get('decidedBy')} at {d.get('decidedAt')}"
                         f"{unverified}")
    if st.get("result"):
        lines += ["", "Result:"]
        lines += [f"  {line}" for line in str(st["result"]).rstrip().splitlines()]
    return "\n".join(lines)


def summarize_input(args: Any) -> str:
    """A tool call's input in one short line: the command or path itself, else key=value pairs."""
    if not isinstance(args, Mapping):
        return one_line(json.dumps(args, default=str), 120)
    for key in ("command", "path", "url", "query", "pattern"):
        if isinstance(args.get(key), str):
            rest = {k: v for k, v in args.items() if k != key and not isinstance(v, (dict, list)) and len(str(v)) < 40}
            extra = " ".join(f"{k}={v}" for k, v in rest.items())
            return one_line(f"{args[key]} {extra}".strip(), 120)
    return one_line(" ".join(f"{k}={json.dumps(v, default=str) if not isinstance(v, str) else v}"
                             for k, v in args.items()), 120)


def describe_event(kind: str, data: Any) -> str:
    """The short text of one live event."""
    d = data if isinstance(data, Mapping) else {}
    if kind == "turn":
        head = f"#{d.get('iteration', '?')} {d.get('stop_reason') or ''}".rstrip()
        return f"{head}: {one_line(d['text'])}" if d.get("text") else head
    if kind == "tool_call":
        risk = d.get("risk")
        note = f"  [{risk} risk: {one_line(d.get('reason'), 60)}]" if risk and risk != "low" else ""
        return f"{d.get('name')} {summarize_input(d.get('input'))}".rstrip() + note
    if kind == "tool_result":
        summary = d.get("summary") or (str(d.get("content") or "").strip().splitlines() or [""])[0]
        return f"{d.get('name')} {'error' if d.get('is_error') else 'ok'}: {one_line(summary)}"
    if kind == "approval_requested":
        return f"{d.get('id')} waits for approval: {one_line(d.get('summary'))}"
    if kind == "approval_decided":
        reason = f": {one_line(d['reason'])}" if d.get("reason") else ""
        return f"{d.get('id')} {d.get('decision')}{reason}"
    if kind == "steering":
        return one_line(str(d.get("text", "")).replace(STEERING_PREFIX, ""))
    if kind == "compacted":
        return "older turns compacted into a summary"
    if kind == "model_error":
        retry = f" (retrying in {d['retry_in']}s)" if d.get("retry_in") is not None else ""
        return one_line(d.get("error")) + retry
    if kind == "resumed":
        return f"resumed from its checkpoint at iteration {d.get('iteration')}"
    if kind == "phase" and d.get("phase"):
        return str(d["phase"])
    if kind == "end":
        return f"{'succeeded' if d.get('success') else 'failed'}: {one_line(d.get('result'))}"
    return one_line(json.dumps(data, default=str))


def format_event(event: Mapping[str, Any], tz: tzinfo | None = None) -> str:
    """One line per event: local time, type, short text."""
    when = _parse_time(event.get("ts"))
    clock = when.astimezone(tz).strftime("%H:%M:%S") if when else "--:--:--"
    kind = str(event.get("type", ""))
    return f"{clock}  {kind:<18}  {describe_event(kind, event.get('data'))}"


def format_tree(root: str, goals: Mapping[str, Mapping[str, Any]]) -> str:
    """root with its dependencies and sub-goals, recursively, each with its phase.

    goals maps names to Goal objects of one namespace. A goal reached a second time is shown
    but not expanded again; a dependency cycle is marked.
    """
    children: dict[str, list[str]] = {}
    for name, goal in goals.items():
        parent = (goal.get("spec") or {}).get("parent")
        if parent:
            children.setdefault(parent, []).append(name)

    def created(name: str) -> tuple[str, str]:
        return ((goals[name].get("metadata") or {}).get("creationTimestamp") or "", name)

    rows: list[tuple[str, str, str]] = []  # (tree column, phase, notes)
    expanded: set[str] = set()

    def visit(name: str, prefix: str, branch: str, role: str, path_: tuple[str, ...]) -> None:
        goal = goals.get(name)
        notes = [role] if role else []
        if goal is None:
            rows.append((prefix + branch + name, "(not found)", ", ".join(notes)))
            return
        st = goal.get("status") or {}
        if st.get("progress"):
            notes.append(f"progress {st['progress']}")
        if st.get("pendingApprovals"):
            notes.append(f"{len(st['pendingApprovals'])} pending approval(s)")
        if name in path_:
            rows.append((prefix + branch + name, _phase(goal), ", ".join(notes) + " (cycle)"))
            return
        deps = list((goal.get("spec") or {}).get("dependsOn") or [])
        subs = sorted(children.get(name, []), key=created)
        seen = name in expanded and bool(deps or subs)
        if seen:
            deps, subs = [], []
        rows.append((prefix + branch + name, _phase(goal), ", ".join(notes) + (" (shown above)" if seen else "")))
        expanded.add(name)
        below = [(d, "dependency") for d in deps] + [(s, "sub-goal") for s in subs]
        inner = prefix + ("" if not branch else ("    " if branch.startswith("└") else "│   "))
        for i, (child, child_role) in enumerate(below):
            last = i == len(below) - 1
            visit(child, inner, "└── " if last else "├── ", child_role, (*path_, name))

    visit(root, "", "", "", ())
    width = max(len(r[0]) for r in rows) + 2
    phase_width = max(len(r[1]) for r in rows) + 2
    return "\n".join(f"{tree:<{width}}{phase:<{phase_width}}{notes}".rstrip() for tree, phase, notes in rows)


# --------------------------------------------------------------------------------------------
# Commands


class Session:
    """One command's connection to the API server, in the namespace it works in."""

    def __init__(self, namespace: str, out: TextIO) -> None:
        self.namespace = namespace
        self.out = out
        self.kube = Kube(self._login, field_manager=FIELD_MANAGER, pool_size=4)

    @staticmethod
    async def _login() -> StaticCredentials:
        try:
            return load_credentials()
        except Exception as e:  # the kubernetes client raises several kinds here
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise CliError(f"no usable kubeconfig at {where}, and not in a pod ({e}): "
                           f"set KUBECONFIG or pass --kubeconfig") from e

    def print(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def goal_path(self, name: str | None = None) -> str:
        return path(API_VERSION, "goals", self.namespace, name)

    async def goal(self, name: str) -> dict[str, Any]:
        goal = await self.kube.get(self.goal_path(name))
        if goal is None:
            try:
                await self.kube.request("GET", self.goal_path(), params={"limit": "1"})
            except ApiError as e:
                if e.status == 404:
                    raise CliError(f"{goal_ref(self.namespace, name)}: the API server knows no Goals: "
                                   f"install the Overseer CRDs (kubectl apply --server-side -f crds/)") from e
                raise
            raise CliError(f"{goal_ref(self.namespace, name)} not found: "
                           f"kubectl get goals -n {self.namespace} lists the goals there")
        return goal

    async def annotate(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        updated = await self.kube.merge_patch(self.goal_path(name), patch)
        if updated is None:
            raise CliError(f"{goal_ref(self.namespace, name)} was deleted meanwhile")
        return updated


def format_spend(agents: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    """What each Agent spent today (UTC) and in all, from status.cost, with a total per namespace."""
    day = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
    by_namespace: dict[str, list[tuple[str, float, float]]] = {}
    for agent in agents:
        cost = (agent.get("status") or {}).get("cost") or {}
        today = float(cost.get("todayUsd") or 0) if cost.get("day") == day else 0.0  # written on an earlier day
        by_namespace.setdefault(agent["metadata"]["namespace"], []).append(
            (agent["metadata"]["name"], today, float(cost.get("totalUsd") or 0)))
    if not by_namespace:
        return "no Agents"
    rows = [("NAMESPACE", "AGENT", "TODAY (UTC)", "TOTAL")]
    for namespace, spent in sorted(by_namespace.items()):
        rows += [(namespace, name, f"${today:.4f}", f"${total:.4f}") for name, today, total in sorted(spent)]
        if len(spent) > 1:
            rows.append((namespace, "(all)", f"${sum(t for _, t, _ in spent):.4f}", f"${sum(t for _, _, t in spent):.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def cmd_spend(s: Session, args: argparse.Namespace) -> int:
    where = None if args.all_namespaces else s.namespace
    listed = await s.kube.get(path(API_VERSION, "agents", where))
    s.print(format_spend((listed or {}).get("items") or []))
    return 0


async def cmd_status(s: Session, args: argparse.Namespace) -> int:
    if args.goal is None:
        return await cmd_spend(s, args)
    if args.all_namespaces:
        raise CliError(f"-A shows the spend of every namespace's Agents: give it without GOAL ({args.goal})")
    goal = await s.goal(args.goal)
    queue = None
    if (goal.get("status") or {}).get("phase") == Phase.QUEUED.value:
        queue = queue_position(goal, ((await s.kube.get(s.goal_path())) or {}).get("items") or [])
    s.print(format_status(goal, queue=queue))
    return 0


async def cmd_decide(s: Session, args: argparse.Namespace) -> int:
    goal = await s.goal(args.goal)
    approval_id = choose_approval(goal, args.id)
    if args.command == "approve":
        await s.annotate(args.goal, approve_patch(approval_id))
        s.print(f"{goal_ref(s.namespace, args.goal)}: approved {approval_id} "
                f"({approvals.APPROVE}={approval_id}); the agent continues")
    else:
        await s.annotate(args.goal, deny_patch(approval_id, args.reason))
        why = f"told: {args.reason}" if args.reason else "given no reason (--reason TEXT gives one)"
        s.print(f"{goal_ref(s.namespace, args.goal)}: denied {approval_id} "
                f"({approvals.DENY}={approval_id}); the agent is {why}")
    return 0


async def cmd_steer(s: Session, args: argparse.Namespace) -> int:
    goal = await s.goal(args.goal)
    ref = goal_ref(s.namespace, args.goal)
    if _phase(goal) in TERMINAL_PHASES:
        raise CliError(f"{ref} has finished ({_phase(goal)}): no agent reads steering any more")
    url = redis_url(args.redis)
    fallback = "no Redis given (--redis URL or $OVERSEER_REDIS_URL)"
    if url:
        redis = live.connect(url, connect_timeout=2.0, timeout=3.0)
        assert redis is not None
        try:
            await live.SteeringQueue(redis, s.namespace, args.goal).push(args.text, author=_author())
        except live.SteeringUnavailable as e:
            fallback = f"Redis at {redact(url)} did not answer ({e})"
        else:
            s.print(f"{ref}: steering queued in Redis at {redact(url)}; the agent reads it before its next model call")
            return 0
        finally:
            await redis.aclose()
    notes = (goal.get("metadata") or {}).get("annotations") or {}
    if notes.get(approvals.STEER) == args.text:
        raise CliError(f"{ref}: {fallback}, and {approvals.STEER} already holds this text; "
                       f"the agent reads each text once: word it differently or give --redis URL")
    await s.annotate(args.goal, steer_patch(args.text))
    s.print(f"{ref}: {fallback}; set the {approvals.STEER} annotation instead, "
            f"which the agent reads before its next model call")
    return 0


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def cmd_logs(s: Session, args: argparse.Namespace) -> int:
    goal = await s.goal(args.goal)
    ref = goal_ref(s.namespace, args.goal)
    url = redis_url(args.redis)
    if not url:
        print(f"{ref}: no Redis given (--redis URL or ${REDIS_ENV}), so no live events; its status:",
              file=sys.stderr)
        s.print(format_status(goal))
        return 0
    redis = live.connect(url, connect_timeout=2.0, timeout=3.0)
    assert redis is not None
    try:
        try:
            await redis.ping()
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            print(f"{ref}: Redis at {redact(url)} did not answer ({e}); its status:", file=sys.stderr)
            s.print(format_status(goal))
            return 1
        stream = live.EventStream(redis, s.namespace, args.goal)
        if args.follow:
            return await _follow(s, stream, redis, args)
        entries = await (redis.xrange(stream.key) if args.from_start
                         else redis.xrevrange(stream.key, count=max(1, args.tail))) or []
        if not args.from_start:
            entries = list(reversed(entries))
        if not entries:
            print(f"{ref}: no events in Redis at {redact(url)} yet (agents publish there when the operator "
                  f"runs with OVERSEER_AGENT_REDIS_URL); phase {_phase(goal)}", file=sys.stderr)
        for entry_id, fields in entries:
            s.print(format_event(live.decode_event(entry_id, fields)))
        return 0
    finally:
        await redis.aclose()


async def _follow(s: Session, stream: live.EventStream, redis: Any, args: argparse.Namespace,
                  poll_seconds: float = 2.0, grace_seconds: float = 5.0) -> int:
    ref = goal_ref(s.namespace, args.goal)
    if not args.from_start:
        newest = await redis.xrevrange(stream.key, count=1)
        if newest and live.decode_event(*newest[0])["type"] == live.EventType.END:
            s.print(format_event(live.decode_event(*newest[0])))
            print(f"{ref} has ended; kubectl overseer logs {args.goal} -n {s.namespace} --from-start "
                  f"shows all its events", file=sys.stderr)
            return 0

    async def print_events() -> str:
        async for event in stream.follow(from_start=args.from_start):
            s.print(format_event(event))
        return "end"

    async def watch_goal() -> str:
        # An agent that dies publishes no `end`; the Goal's phase still says when it is over.
        finished_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(poll_seconds)
            goal = await s.kube.get(s.goal_path(args.goal))
            if goal is None:
                return "deleted"
            if _phase(goal) in TERMINAL_PHASES:
                finished_since = finished_since or loop.time()
                if loop.time() - finished_since >= grace_seconds:
                    return _phase(goal)

    tasks = [asyncio.create_task(print_events()), asyncio.create_task(watch_goal())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    outcome = (tasks[0] if tasks[0] in done else tasks[1]).result()
    if outcome == "deleted":
        raise CliError(f"{ref} was deleted while following its events")
    if outcome != "end":
        print(f"{ref} is {outcome}, and its agent published no end event", file=sys.stderr)
    return 0


async def cmd_tree(s: Session, args: argparse.Namespace) -> int:
    await s.goal(args.goal)
    listing = await s.kube.request("GET", s.goal_path())
    goals = {g["metadata"]["name"]: g for g in listing.get("items") or []}
    s.print(format_tree(args.goal, goals))
    return 0


COMMANDS = {"status": cmd_status, "approve": cmd_decide, "deny": cmd_decide, "steer": cmd_steer,
            "logs": cmd_logs, "tree": cmd_tree}


async def run(args: argparse.Namespace, namespace: str, out: TextIO) -> int:
    session = Session(namespace, out)
    ref = goal_ref(namespace, args.goal)
    try:
        return await COMMANDS[args.command](session, args)
    except ApiError as e:
        hint = ""
        if e.status in (401, 403):
            verb = {"approve": "approve", "deny": "approve", "steer": "patch"}.get(args.command, "get")
            hint = f"; check your access with kubectl auth can-i {verb} goals.overseer.dev -n {namespace}"
        elif e.status == 404:
            hint = "; are the Overseer CRDs installed? kubectl get crd goals.overseer.dev"
        raise CliError(f"{ref}: the API server refused: {e.status} {e.reason}: {e.message}{hint}") from e
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise CliError(f"{ref}: cannot reach the Kubernetes API server ({e or type(e).__name__}); "
                       f"check KUBECONFIG, --kubeconfig and the current context") from e
    finally:
        await session.kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `kubectl-overseer` (kubectl runs it as `kubectl overseer`)."""
    args = build_parser().parse_args(argv)
    if args.kubeconfig:
        # Before the kubernetes client is imported: it reads $KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = args.kubeconfig
    try:
        namespace = args.namespace or default_namespace()
        return asyncio.run(run(args, namespace, sys.stdout))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
