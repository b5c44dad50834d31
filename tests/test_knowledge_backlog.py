"""A full disk under the knowledge base, shown where a person looks: the goal's agent reports its
waiting writes in the goal's status and in Events; the operator sums them up in the Agent's
KnowledgeBase condition, which clears once the writes are stored."""

from __future__ import annotations

import asyncio
from typing import Any

from overseer.agent.knowledge.backlog import Backlog
from overseer.agent.knowledge_report import BacklogReporter
from overseer.agent.goal_link import GoalLink
from overseer.operator.knowledge_backlog import knowledge_condition
from overseer.operator.knowledge_tenants import Access

GOAL = {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal",
        "metadata": {"name": "fix-ci", "namespace": "team-a", "uid": "u-1", "resourceVersion": "1"}, "spec": {}}
FULL = Backlog("DiskFull", 'could not extend file "base/1/2": No space left on device', 2,
               "1 checkpoint, 1 experience", "2026-12-02T14:00:00Z")
READY = Access(True, "CredentialsReady", "goal pods read their knowledge-base login for namespace team-a")


class ApiServer:
    """What the reporter uses of Kube: status writes and Events, recorded."""

    def __init__(self) -> None:
        self.status: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def request(self, method: str, url_path: str, *, body: Any = None, content_type: str = "",
                      params: dict[str, str] | None = None) -> dict[str, Any]:
        assert (method, url_path) == ("PATCH", "/apis/overseer.dev/v1alpha1/namespaces/team-a/goals/fix-ci/status")
        self.status.append(body["status"])
        return body

    async def create(self, url_path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert url_path == "/api/v1/namespaces/team-a/events"
        self.events.append(body)
        return body


async def settle(reporter: BacklogReporter) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await reporter.stop()


async def test_a_full_disk_is_reported_in_the_goals_status_and_an_event_until_the_writes_are_stored() -> None:
    api = ApiServer()
    link = GoalLink(api, "team-a", "fix-ci")  # type: ignore[arg-type]
    reporter = BacklogReporter(api, link, GOAL)  # type: ignore[arg-type]

    reporter(FULL)
    await settle(reporter)
    assert api.status[-1]["knowledgeBacklog"] == FULL.to_status()
    [event] = api.events
    assert (event["type"], event["reason"]) == ("Warning", "KnowledgeBaseDiskFull")
    assert event["involvedObject"] == {"apiVersion": "overseer.dev/v1alpha1", "kind": "Goal", "name": "fix-ci",
                                       "namespace": "team-a", "uid": "u-1"}
    assert "disk is full" in event["message"] and "1 checkpoint, 1 experience" in event["message"]

    reporter(Backlog(**{**FULL.__dict__, "queued": 3, "waiting": "2 checkpoints, 1 experience"}))
    await settle(reporter)
    assert api.status[-1]["knowledgeBacklog"]["queuedWrites"] == 3
    assert len(api.events) == 1  # more writes waiting for the same reason: no new Event

    reporter(None)
    await settle(reporter)
    assert "knowledgeBacklog" not in api.status[-1]  # given up under server-side apply: the field goes
    assert [(e["type"], e["reason"]) for e in api.events[1:]] == [("Normal", "KnowledgeBaseWritesStored")]
    assert "2026-12-02T14:00:00Z" in api.events[1]["message"]


def goal(name: str, reason: str, queued: int, since: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": "Running", "knowledgeBacklog": {
        "reason": reason, "message": f"{reason} seen by {name}", "queuedWrites": queued, "since": since}}}


def test_the_agents_condition_says_which_goals_wait_on_a_full_disk_and_the_fix() -> None:
    access = knowledge_condition(READY, [goal("work-0", "DiskFull", 2, "2026-12-02T14:00:05Z"),
                                         goal("work-1", "Unavailable", 1, "2026-12-02T14:00:00Z"),
                                         goal("work-2", "DiskFull", 5, "2026-12-02T14:00:01Z")])
    assert (access.ready, access.reason) == (False, "DiskFull")
    assert "goals work-0, work-2" in access.message and "work-1" not in access.message
    assert "7 writes" in access.message and "since 2026-12-02T14:00:01Z" in access.message
    assert "Free space on the knowledge base's PostgreSQL volume" in access.message
    assert "DiskFull seen by work-0" in access.message


def test_writes_waiting_for_another_reason_are_shown_as_queued() -> None:
    access = knowledge_condition(READY, [goal("work-1", "Unavailable", 1, "2026-12-02T14:00:00Z")])
    assert (access.ready, access.reason) == (False, "WritesQueued")
    assert "goal work-1" in access.message and "disk" not in access.message


def test_the_condition_is_the_logins_when_no_goal_waits_or_the_login_itself_is_missing() -> None:
    assert knowledge_condition(READY, []) == READY
    missing = Access(False, "DatabaseUnavailable", "the knowledge base could not provision a login")
    assert knowledge_condition(missing, [goal("work-0", "DiskFull", 2, "")]) == missing


def test_many_goals_are_counted_not_all_named() -> None:
    access = knowledge_condition(READY, [goal(f"work-{i}", "DiskFull", 1, "") for i in range(8)])
    assert "work-4 and 3 more" in access.message and "work-5" not in access.message
    assert "since a moment ago" in access.message


def test_the_operator_finds_the_running_goals_that_report_waiting_writes() -> None:
    from overseer.operator.runtime import Runtime
    from overseer.operator.settings import Settings

    rt = Runtime(kube=None, settings=Settings(), events=None)  # type: ignore[arg-type]

    def cached(name: str, phase: str, backlog: bool, rv: str) -> dict[str, Any]:
        raw = goal(name, "DiskFull", 2, "")
        raw["metadata"].update(namespace="team-a", uid=f"uid-{name}", resourceVersion=rv)
        raw["spec"] = {"agentRef": {"name": "coder"}}
        raw["status"].update(phase=phase, agent="coder")
        if not backlog:
            del raw["status"]["knowledgeBacklog"]
        return raw

    goals = rt.stores["goals"]
    goals.upsert(cached("work-1", "Running", True, "1"))
    goals.upsert(cached("work-0", "AwaitingApproval", True, "2"))
    goals.upsert(cached("done", "Succeeded", True, "3"))  # ended: no agent left to clear it
    goals.upsert(cached("quiet", "Running", False, "4"))
    assert [g["metadata"]["name"] for g in rt.knowledge_backlogs("team-a", "coder")] == ["work-0", "work-1"]
    goals.upsert(cached("work-0", "Running", False, "5"))  # its writes were stored
    goals.upsert(cached("work-1", "Succeeded", True, "6"))
    assert rt.knowledge_backlogs("team-a", "coder") == []
