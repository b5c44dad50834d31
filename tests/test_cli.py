"""`kubectl overseer`: its command line and what it prints, as pure functions of Goals and events."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from overseer import approvals, cli
from overseer import live

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def goal(name: str = "ship", namespace: str = "team-a", *, spec: dict[str, Any] | None = None,
         created: str = "2026-01-01T11:00:00Z", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"description": "Deploy the release to production.", "agentRef": {"name": "coder"}, **(spec or {})},
        "status": status,
    }


def pending(approval_id: str, summary: str = "deploy (high risk): capability deploy is high risk") -> dict[str, Any]:
    return {"id": approval_id, "kind": "toolCall", "summary": summary, "detail": '{"target": "prod"}',
            "requestedAt": "2026-01-01T11:59:30Z"}


# ---- the command line -----------------------------------------------------------------------


def test_options_work_before_and_after_the_subcommand() -> None:
    parser = cli.build_parser()
    after = parser.parse_args(["status", "ship", "-n", "team-a", "--kubeconfig", "/k"])
    before = parser.parse_args(["-n", "team-a", "--kubeconfig", "/k", "status", "ship"])
    for args in (after, before):
        assert (args.command, args.goal, args.namespace, args.kubeconfig) == ("status", "ship", "team-a", "/k")
    assert parser.parse_args(["status", "ship"]).namespace is None


def test_approve_and_deny_take_an_optional_id_and_deny_a_reason() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["approve", "ship"]).id is None
    assert parser.parse_args(["approve", "ship", "deploy-1"]).id == "deploy-1"
    deny = parser.parse_args(["deny", "ship", "--reason", "not on a Friday"])
    assert (deny.id, deny.reason) == (None, "not on a Friday")


def test_logs_and_steer_options() -> None:
    parser = cli.build_parser()
    logs = parser.parse_args(["logs", "ship", "-f", "--from-start", "--redis", "redis://127.0.0.1:6379/0"])
    assert (logs.follow, logs.from_start, logs.redis, logs.tail) == (True, True, "redis://127.0.0.1:6379/0", 20)
    steer = parser.parse_args(["steer", "ship", "Use the v2 parser"])
    assert (steer.text, steer.redis) == ("Use the v2 parser", None)


@pytest.mark.parametrize("argv", [[], ["approve"], ["frobnicate", "ship"], ["logs", "ship", "--tail", "many"]])
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 1
    assert "usage: kubectl overseer" in capsys.readouterr().err


def test_the_namespace_defaults_to_the_kubeconfig_context(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "work",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
                     {"name": "bare", "context": {"cluster": "c", "user": "u"}}],
    }
    with_ns = tmp_path / "with-namespace"
    with_ns.write_text(yaml.safe_dump(config))
    without = tmp_path / "without-namespace"
    without.write_text(yaml.safe_dump({**config, "current-context": "bare"}))
    assert cli.default_namespace(str(with_ns)) == "team-a"
    assert cli.default_namespace(str(without)) == "default"


def test_the_redis_url_comes_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.REDIS_ENV, raising=False)
    assert cli.redis_url(None) is None
    monkeypatch.setenv(cli.REDIS_ENV, "redis://127.0.0.1:6379/1")
    assert cli.redis_url(None) == "redis://127.0.0.1:6379/1"
    assert cli.redis_url("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"


def test_printed_redis_urls_hide_the_password() -> None:
    assert cli.redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert cli.redact("redis://app:s3cret@127.0.0.1/0") == "redis://app:***@127.0.0.1/0"
    assert cli.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ---- approvals ------------------------------------------------------------------------------


def test_the_only_pending_approval_is_chosen_when_none_is_named() -> None:
    g = goal(phase="AwaitingApproval", pendingApprovals=[pending("deploy-1")])
    assert cli.choose_approval(g, None) == "deploy-1"
    assert cli.choose_approval(g, "deploy-1") == "deploy-1"


def test_choosing_fails_when_nothing_is_pending() -> None:
    with pytest.raises(cli.CliError, match=r"Goal team-a/ship has no pending approvals \(phase Running\)"):
        cli.choose_approval(goal(phase="Running"), None)


def test_choosing_fails_with_a_list_when_several_are_pending() -> None:
    g = goal(phase="AwaitingApproval", pendingApprovals=[pending("deploy-1"), pending("bash-2", "bash: rm -rf")])
    with pytest.raises(cli.CliError, match="has 2 pending approvals, name one: deploy-1 .*; bash-2 \\(bash: rm -rf\\)"):
        cli.choose_approval(g, None)
    assert cli.choose_approval(g, "bash-2") == "bash-2"


def test_an_id_that_is_not_pending_is_refused() -> None:
    g = goal(phase="AwaitingApproval", pendingApprovals=[pending("deploy-1")],
             decisions=[{"id": "deploy-0", "decision": "denied", "decidedBy": "kubectl-overseer",
                         "decidedAt": "2026-01-01T11:00:00Z"}])
    with pytest.raises(cli.CliError, match="deploy-0 was already denied by kubectl-overseer"):
        cli.choose_approval(g, "deploy-0")
    with pytest.raises(cli.CliError, match="approval typo is not pending; pending: deploy-1"):
        cli.choose_approval(g, "typo")


def test_patches_set_the_annotations_kubectl_annotate_would() -> None:
    assert cli.approve_patch("deploy-1") == {"metadata": {"annotations": {approvals.APPROVE: "deploy-1"}}}
    assert cli.deny_patch("deploy-1", "not now") == {
        "metadata": {"annotations": {approvals.DENY: "deploy-1", approvals.DENY_REASON: "not now"}}}
    # A denial without a reason must not carry an earlier denial's reason along.
    assert cli.deny_patch("deploy-2", None)["metadata"]["annotations"][approvals.DENY_REASON] is None
    assert cli.steer_patch("use v2") == {"metadata": {"annotations": {approvals.STEER: "use v2"}}}


# ---- status ---------------------------------------------------------------------------------


def test_status_shows_progress_tokens_and_the_commands_that_decide_a_pending_approval() -> None:
    g = goal(phase="AwaitingApproval", agent="coder", attempt=1, pod="ship-a1", iteration=3, progress="2/5",
             lastTool="deploy target=prod", message="Waiting for approval deploy-1",
             tokens={"input": 1200, "output": 340, "cacheRead": 5000, "cacheWrite": 10, "total": 6550},
             startedAt="2026-01-01T11:55:00Z", pendingApprovals=[pending("deploy-1")])
    text = cli.format_status(g, now=NOW)
    assert "Goal:" in text and "team-a/ship" in text
    assert "Phase:       AwaitingApproval" in text
    assert "Attempt:     1 of 2, pod ship-a1" in text
    assert "6,550 total (input 1,200, output 340, cache read 5,000, cache write 10)" in text
    assert "Progress:    2/5" in text and "Last tool:   deploy target=prod" in text
    assert "Started:     2026-01-01T11:55:00Z (5m ago)" in text
    assert "deploy-1  toolCall, asked 30s ago" in text
    assert "approve: kubectl overseer approve ship deploy-1 -n team-a" in text
    assert "deny:    kubectl overseer deny ship deploy-1 -n team-a --reason TEXT" in text


def test_status_of_a_finished_goal_shows_who_decided_and_the_result() -> None:
    g = goal(phase="Succeeded", result="Deployed.\nAll checks green.",
             decisions=[{"id": "deploy-1", "decision": "approved", "decidedBy": "system:serviceaccount:team-a:alice",
                         "decidedAt": "2026-01-01T11:58:00Z", "verified": True},
                        {"id": "deploy-2", "decision": "denied", "decidedBy": "unverified field manager kubectl-annotate",
                         "decidedAt": "2026-01-01T11:59:00Z", "verified": False}])
    text = cli.format_status(g, now=NOW)
    assert "deploy-1  approved by system:serviceaccount:team-a:alice at 2026-01-01T11:58:00Z\n" in text
    assert ("deploy-2  denied by unverified field manager kubectl-annotate at 2026-01-01T11:59:00Z (unverified: "
            "the admission policies were missing)") in text
    assert text.endswith("Result:\n  Deployed.\n  All checks green.")
    assert "Pending approvals" not in text


def test_status_shows_what_the_goal_cost_when_the_gateway_priced_it() -> None:
    priced = cli.format_status(goal(phase="Running", cost={"usd": 0.012345, "tokens": 9000, "requests": 4,
                                                           "ownUsd": 0.012345}), now=NOW)
    parent = cli.format_status(goal(phase="Running", cost={"usd": 0.5, "tokens": 9000, "requests": 40,
                                                           "ownUsd": 0.125}), now=NOW)
    unpriced = cli.format_status(goal(phase="Running"), now=NOW)

    assert "Cost:        $0.0123 in 4 model calls (model gateway)" in priced.splitlines()
    assert "Cost:        $0.5000 in 40 model calls (model gateway), $0.3750 of it by sub-goals" in parent.splitlines()
    assert "Cost:" not in unpriced


def test_status_of_a_goal_the_operator_has_not_seen_yet() -> None:
    g = goal()
    g.pop("status")
    text = cli.format_status(g, now=NOW)
    assert "Pending (not reconciled yet)" in text and "Agent:       coder" in text


@pytest.mark.parametrize(("seconds", "shown"), [(5, "5s"), (192, "3m12s"), (900, "15m"), (7500, "2h5m"),
                                                (3 * 86400 + 3600, "3d1h")])
def test_ages_read_like_kubectl(seconds: int, shown: str) -> None:
    then = datetime.fromtimestamp(NOW.timestamp() - seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli.age(then, NOW) == shown


# ---- events ---------------------------------------------------------------------------------


def event(kind: str, **data: Any) -> dict[str, Any]:
    return {"id": "1-0", "type": kind, "ts": "2026-01-01T12:34:56.789Z", "data": data}


@pytest.mark.parametrize(("ev", "line"), [
    (event("turn", iteration=2, stop_reason="tool_use", text="Let me read\nparser.py"),
     "12:34:56  turn                #2 tool_use: Let me read parser.py"),
    (event("turn", iteration=1, stop_reason="tool_use", text=""), "12:34:56  turn                #1 tool_use"),
    (event("tool_call", name="bash", input={"command": "pytest -q", "timeout": 60}, risk="low", reason=""),
     "12:34:56  tool_call           bash pytest -q timeout=60"),
    (event("tool_call", name="deploy", input={"target": "prod"}, risk="high", reason="capability deploy is high risk"),
     "12:34:56  tool_call           deploy target=prod  [high risk: capability deploy is high risk]"),
    (event("tool_result", name="bash", summary="exit 0", is_error=False, content="ok"),
     "12:34:56  tool_result         bash ok: exit 0"),
    (event("tool_result", name="read_file", summary="", is_error=True, content="no such file\nmore"),
     "12:34:56  tool_result         read_file error: no such file"),
    (event("approval_requested", id="deploy-1", summary="deploy (high risk)"),
     "12:34:56  approval_requested  deploy-1 waits for approval: deploy (high risk)"),
    (event("approval_decided", id="deploy-1", decision="denied", reason="not on a Friday"),
     "12:34:56  approval_decided    deploy-1 denied: not on a Friday"),
    (event("steering", text="Steering from the person who owns this goal: use v2"),
     "12:34:56  steering            use v2"),
    (event("model_error", error="overloaded", retry_in=2.0),
     "12:34:56  model_error         overloaded (retrying in 2.0s)"),
    (event("end", success=True, result="Deployed."), "12:34:56  end                 succeeded: Deployed."),
    (event("end", success=False, result="budget spent"), "12:34:56  end                 failed: budget spent"),
    (event("something_new", x=1), '12:34:56  something_new       {"x": 1}'),
])
def test_each_event_is_one_line_with_time_type_and_short_text(ev: dict[str, Any], line: str) -> None:
    assert cli.format_event(ev, tz=timezone.utc) == line


def test_long_event_text_is_cut() -> None:
    line = cli.format_event(event("turn", iteration=1, stop_reason="end_turn", text="x" * 1000), tz=timezone.utc)
    assert len(line) < 220 and line.endswith("...")


def test_stream_entries_decode_like_the_event_stream_yields_them() -> None:
    decoded = live.decode_event(b"5-1", {b"type": b"end", b"ts": b"2026-01-01T00:00:00Z",
                                        b"data": b'{"success": true}'})
    assert decoded == {"id": "5-1", "type": "end", "ts": "2026-01-01T00:00:00Z", "data": {"success": True}}


# ---- tree -----------------------------------------------------------------------------------


def test_the_tree_shows_dependencies_and_sub_goals_recursively_with_phases() -> None:
    goals = {g["metadata"]["name"]: g for g in [
        goal("release", spec={"dependsOn": ["setup", "gone"]}, phase="Running", progress="1/3"),
        goal("setup", phase="Succeeded"),
        goal("lint", spec={"parent": "release"}, phase="AwaitingApproval",
             pendingApprovals=[pending("bash-1")], created="2026-01-01T11:01:00Z"),
        goal("docs", spec={"parent": "release"}, phase="Queued", created="2026-01-01T11:02:00Z"),
        goal("lint-fix", spec={"parent": "lint", "dependsOn": ["setup"]}, phase="Blocked"),
        goal("unrelated", phase="Running"),
    ]}
    assert cli.format_tree("release", goals).splitlines() == [
        "release            Running           progress 1/3",
        "├── setup          Succeeded         dependency",
        "├── gone           (not found)       dependency",
        "├── lint           AwaitingApproval  sub-goal, 1 pending approval(s)",
        "│   └── lint-fix   Blocked           sub-goal",
        "│       └── setup  Succeeded         dependency",
        "└── docs           Queued            sub-goal",
    ]


def test_a_dependency_cycle_is_marked_not_followed() -> None:
    goals = {"a": goal("a", spec={"dependsOn": ["b"]}, phase="Failed"),
             "b": goal("b", spec={"dependsOn": ["a"]}, phase="Failed")}
    assert cli.format_tree("a", goals).splitlines() == [
        "a          Failed",
        "└── b      Failed  dependency",
        "    └── a  Failed  dependency (cycle)",
    ]


def test_a_goal_reached_twice_is_expanded_once() -> None:
    goals = {"top": goal("top", spec={"dependsOn": ["x", "y"]}, phase="Blocked"),
             "x": goal("x", spec={"dependsOn": ["base"]}, phase="Blocked"),
             "y": goal("y", spec={"dependsOn": ["x"]}, phase="Blocked"),
             "base": goal("base", phase="Running")}
    lines = cli.format_tree("top", goals).splitlines()
    assert lines[-1].split() == ["└──", "x", "Blocked", "dependency", "(shown", "above)"]
    assert sum("base" in line for line in lines) == 1


def test_status_gives_a_queued_goals_place_in_its_agents_queue() -> None:
    goals = [goal("first", phase="Running", agent="coder"),
             goal("low", phase="Queued", agent="coder", created="2026-01-01T11:00:00Z"),
             goal("urgent", spec={"priority": 10}, phase="Queued", agent="coder", created="2026-01-01T11:05:00Z"),
             goal("older-low", phase="Queued", agent="coder", created="2026-01-01T10:00:00Z"),
             goal("elsewhere", phase="Queued", agent="reviewer")]
    by_name = {g["metadata"]["name"]: g for g in goals}
    assert [cli.queue_position(by_name[n], goals) for n in ("urgent", "older-low", "low")] == [(1, 3), (2, 3), (3, 3)]
    assert cli.queue_position(by_name["first"], goals) is None
    assert cli.queue_position(by_name["elsewhere"], goals) == (1, 1)
    text = cli.format_status(by_name["low"], NOW, queue=cli.queue_position(by_name["low"], goals))
    assert "Queue:       3 of 3 for agent coder" in text


def test_status_without_a_goal_shows_what_each_agent_and_namespace_spent() -> None:
    def agent(name: str, namespace: str, cost: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": {"cost": cost} if cost else {}}

    text = cli.format_spend([
        agent("coder", "team-a", {"todayUsd": 0.5, "totalUsd": 12.25, "day": "2026-01-01"}),
        agent("reviewer", "team-a", {"todayUsd": 0.25, "totalUsd": 1, "day": "2026-01-01"}),
        agent("old", "team-b", {"todayUsd": 3, "totalUsd": 3, "day": "2025-12-31"}),
        agent("idle", "team-b"),
    ], now=NOW)
    lines = [line.split() for line in text.splitlines()]

    assert lines[0] == ["NAMESPACE", "AGENT", "TODAY", "(UTC)", "TOTAL"]
    assert ["team-a", "coder", "$0.5000", "$12.2500"] in lines
    assert ["team-a", "(all)", "$0.7500", "$13.2500"] in lines
    assert ["team-b", "old", "$0.0000", "$3.0000"] in lines, "spent on an earlier day: nothing today"
    assert ["team-b", "idle", "$0.0000", "$0.0000"] in lines
    assert cli.format_spend([], now=NOW) == "no Agents"
    parsed = cli.build_parser().parse_args(["status", "-A"])
    assert parsed.goal is None and parsed.all_namespaces
