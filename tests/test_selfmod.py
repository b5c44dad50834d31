"""Self-modification: what a proposal must pass before a person is asked, what is stored on
approval, and how later goals use it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from overseer import modifications
from overseer.agent.tools import ToolContext, ToolRegistry, default_registry
from overseer.agent.tools.selfmod import (
    ProposeLesson,
    ProposeScriptTool,
    ScriptTool,
    approved_from,
    check_script_tool,
    register_approved,
)
from overseer.kube import ApiError
from overseer.operator.modification_store import ModificationStore, approved_requests, render_configmap

WORD_COUNT = "import json, sys\nargs = json.load(sys.stdin)\nprint(len(args['text'].split()))\n"
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
BUILT_IN = ("read_file", "bash", "todo")


def check(script: str = WORD_COUNT, *, name: str = "word_count", schema: Any = None, network: bool = False,
          taken: tuple[str, ...] = BUILT_IN) -> list[str]:
    return check_script_tool(name, "Count the words of a text", SCHEMA if schema is None else schema, script,
                             taken=taken, network_allowed=network)


async def nothing_stored(_: str) -> bool:
    return False


async def always_stored(_: str) -> bool:
    return True


# --- validation of a script tool ---------------------------------------------------------------


def test_a_well_formed_offline_script_tool_passes():
    assert check() == []


def test_a_script_that_does_not_parse_is_refused_with_its_line():
    [problem] = check("import json\ndef broken(:\n    pass\n")
    assert "does not parse" in problem and "line 2" in problem


@pytest.mark.parametrize("script", [
    "import socket\nsocket.create_connection(('example.com', 80))",
    "import urllib.request\nurllib.request.urlopen('https://example.com')",
    "from http import client",
    "from http.client import HTTPSConnection",
    "import requests",
    "import aiohttp",
    "import httpx as h",
    "import asyncio\nasyncio.run(asyncio.open_connection('example.com', 443))",
    "import subprocess\nsubprocess.run(['curl', '-s', 'https://example.com'])",
    "import subprocess\nsubprocess.run('cat x | wget -O- https://example.com', shell=True)",
    "import os\nos.system('/usr/bin/nc example.com 80')",
    "from os import system\nsystem('ssh host')",
    "import subprocess\nsubprocess.check_call(['git', 'clone', 'https://example.com/x.git'])",
])
def test_network_use_is_refused_without_a_capability_with_egress(script):
    [problem] = check(script)
    assert "network" in problem and "Capability with egress" in problem


@pytest.mark.parametrize("script", [
    "__import__('soc' + 'ket')",
    "import importlib\nimportlib.import_module('socket')",
    "exec(open('x.py').read())",
    "import builtins\nbuiltins.__import__('socket')",
])
def test_code_that_hides_what_it_imports_is_refused_without_egress(script):
    [problem] = check(script)
    assert "cannot see" in problem


def test_network_use_is_allowed_when_a_capability_declares_egress():
    assert check("import urllib.request\nprint(urllib.request.urlopen('https://example.com').status)",
                 network=True) == []


@pytest.mark.parametrize("script", [
    "import subprocess\nprint(subprocess.run(['git', 'status'], capture_output=True, text=True).stdout)",
    "print('install with: curl https://example.com | sh')",  # spawns nothing: only text
    "import re\nprint(re.compile('a+').findall('aaa'))",
])
def test_offline_scripts_that_only_mention_network_words_pass(script):
    assert check(script) == []


@pytest.mark.parametrize("schema, expected", [
    ({"type": "object", "properties": {"text": {"type": "nope"}}}, "not a valid JSON Schema at properties/text/type"),
    ({"type": "object", "required": "text"}, "not a valid JSON Schema"),
    ({"type": "string"}, '"type": "object"'),
    ({"properties": {}}, '"type": "object"'),
    ("object", '"type": "object"'),
])
def test_an_invalid_input_schema_is_refused(schema, expected):
    [problem] = check(schema=schema)
    assert expected in problem


@pytest.mark.parametrize("name", ["bash", "Bash", "read_file"])
def test_a_name_held_by_another_tool_is_refused(name):
    [problem] = check(name=name)
    assert "already taken" in problem


@pytest.mark.parametrize("name", ["", "word count", "wc/x", "x" * 65, 42])
def test_an_invalid_tool_name_is_refused(name):
    assert any("not a valid tool name" in p for p in check(name=name))


# --- proposing -----------------------------------------------------------------------------------


def script_proposal(registry: ToolRegistry, network: bool = False, confirm=always_stored) -> ProposeScriptTool:
    return ProposeScriptTool("uid-1", "coder", confirm, taken=registry.names, network_allowed=network)


def tool_input(**overrides: Any) -> dict[str, Any]:
    return {"name": "word_count", "description": "Count the words of a text", "input_schema": SCHEMA,
            "script": WORD_COUNT, **overrides}


def test_a_valid_proposal_always_waits_for_a_person(tmp_path: Path):
    registry = default_registry()
    proposal = script_proposal(registry)
    registry.register(proposal)

    assessment = registry.assess("propose_script_tool", tool_input(), ToolContext(workspace=tmp_path))

    assert assessment.risk == "high"


def test_an_invalid_proposal_is_refused_without_asking(tmp_path: Path):
    registry = default_registry()
    registry.register(script_proposal(registry))
    ctx = ToolContext(workspace=tmp_path)

    assessment = registry.assess("propose_script_tool", tool_input(script="import socket"), ctx)
    assert assessment.risk == "low" and "imports socket" in assessment.reason


async def test_running_an_invalid_proposal_returns_the_problems(tmp_path: Path):
    registry = default_registry()
    registry.register(script_proposal(registry))

    result = await registry.run("propose_script_tool", tool_input(name="bash"), ToolContext(workspace=tmp_path))

    assert result.is_error and "already taken" in result.content


def test_the_approval_request_carries_the_whole_proposal_as_json():
    request = script_proposal(default_registry()).approval_request(tool_input())

    assert request["kind"] == "selfModification"
    proposal = modifications.parse_proposal(request["detail"])
    assert proposal["tool"] == {"name": "word_count", "description": "Count the words of a text",
                                "inputSchema": SCHEMA, "language": "python", "script": WORD_COUNT}
    assert request["id"].startswith("tool-word_count-")
    assert request["id"] == modifications.proposal_id(request["detail"], "uid-1")


def test_the_id_commits_to_the_goal_and_the_exact_proposal():
    lesson = ProposeLesson("uid-1", "coder", always_stored)
    first = lesson.approval_request({"lesson": "Run the linter first"})

    assert first["id"].startswith("lesson-")
    assert first == lesson.approval_request({"lesson": "Run the linter first"})
    assert first["id"] != lesson.approval_request({"lesson": "Run the linter last"})["id"]
    assert first["id"] != ProposeLesson("uid-2", "coder", always_stored).approval_request(
        {"lesson": "Run the linter first"})["id"]


async def test_an_approved_proposal_tells_the_model_how_it_is_kept(tmp_path: Path):
    lesson = ProposeLesson("uid-1", "coder", always_stored)
    result = await lesson.run({"lesson": "Run the linter first"}, ToolContext(workspace=tmp_path))

    assert not result.is_error
    assert "next goal" in result.content and "kubectl annotate agent/coder overseer.dev/revert=lesson-" in result.content


async def test_an_approved_proposal_the_operator_did_not_store_is_an_error(tmp_path: Path):
    lesson = ProposeLesson("uid-1", "coder", nothing_stored)
    result = await lesson.run({"lesson": "Run the linter first"}, ToolContext(workspace=tmp_path))

    assert result.is_error and "did not store" in result.content


# --- storing (the operator) ----------------------------------------------------------------------


def goal_with(requests: list[dict[str, Any]], approve: str | None = None, uid: str = "uid-1") -> dict[str, Any]:
    annotations = {"overseer.dev/approve": approve, "overseer.dev/decided-by": "system:serviceaccount:team-a:reviewer"} \
        if approve else {}
    managed = [{"manager": "kubectl-annotate", "time": "2026-01-02T03:04:05Z",
                "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/approve": {}}}}}]
    return {"metadata": {"name": "learn", "namespace": "team-a", "uid": uid, "annotations": annotations,
                         "managedFields": managed},
            "status": {"pendingApprovals": requests}}


def lesson_request(text: str = "Run the linter first", uid: str = "uid-1") -> dict[str, Any]:
    return {**ProposeLesson(uid, "coder", always_stored).approval_request({"lesson": text}),
            "requestedAt": "2026-01-02T03:00:00Z"}


def test_an_approved_request_becomes_a_record_naming_who_approved_it():
    request = lesson_request()
    [approved], problems = approved_requests(goal_with([request], approve=request["id"]))

    assert problems == []
    assert approved.record == {"id": request["id"], "kind": "lesson", "lesson": "Run the linter first",
                               "goal": "learn", "approvedBy": "system:serviceaccount:team-a:reviewer",
                               "approvedAt": "2026-01-02T03:04:05Z", "reverted": False}


def test_unapproved_denied_and_tool_call_requests_are_not_stored():
    request = lesson_request()
    assert approved_requests(goal_with([request])) == ([], [])
    denied = goal_with([request])
    denied["metadata"]["annotations"] = {"overseer.dev/deny": request["id"]}
    assert approved_requests(denied) == ([], [])
    call = {"id": "bash-1", "kind": "toolCall", "summary": "bash", "detail": "ls"}
    assert approved_requests(goal_with([call], approve="bash-1")) == ([], [])


def test_a_request_changed_after_it_was_asked_for_is_not_stored():
    request = lesson_request()
    request["detail"] = request["detail"].replace("first", "never")

    approved, [problem] = approved_requests(goal_with([request], approve=request["id"]))

    assert approved == [] and "does not match its id" in problem


def test_the_config_map_is_owned_by_its_agent(make_agent):
    cm = render_configmap(make_agent("coder"), {"x": "{}"})

    assert cm["metadata"]["name"] == "overseer-agent-coder-modifications"
    assert cm["metadata"]["labels"] == {"overseer.dev/agent": "coder", "app.kubernetes.io/managed-by": "overseer"}
    [owner] = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Agent", "coder", True)


class FakeKube:
    """The ConfigMap part of the API server: conditional merge patches by resourceVersion."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(obj)

    async def get(self, url: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(url))

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        key = f"{url}/{body['metadata']['name']}"
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(body)
        return self._stamp(self.objects[key])

    async def merge_patch(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        obj = self.objects.get(url)
        if obj is None:
            return None
        if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified", "PATCH", url)
        obj.setdefault("data", {}).update(body["data"])
        return self._stamp(obj)


def agent_raw(make_agent, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    raw = make_agent("coder").model_dump(by_alias=True, mode="json")
    raw["metadata"]["annotations"] = annotations or {}
    raw["metadata"]["managedFields"] = [{"manager": "kubectl-annotate", "time": "2026-01-03T00:00:00Z",
                                         "fieldsV1": {"f:metadata": {"f:annotations": {"f:overseer.dev/revert": {}}}}}]
    return raw


async def test_storing_is_idempotent_and_leaves_an_existing_key_alone(make_agent):
    kube = FakeKube()
    store = ModificationStore(kube)  # type: ignore[arg-type]
    first, second = lesson_request("one"), lesson_request("two")
    [a], _ = approved_requests(goal_with([first], approve=first["id"]))
    [b], _ = approved_requests(goal_with([second], approve=second["id"]))

    assert await store.store(agent_raw(make_agent), [a]) == [a.id]
    changed = copy.deepcopy(a)
    changed.record["lesson"] = "something else"
    assert await store.store(agent_raw(make_agent), [changed, b]) == [b.id]
    assert await store.store(agent_raw(make_agent), [a, b]) == []

    data = kube.objects[store.url("team-a", "coder")]["data"]
    assert json.loads(data[a.id])["lesson"] == "one" and json.loads(data[b.id])["lesson"] == "two"


async def test_a_revert_marks_the_record_and_keeps_it(make_agent):
    kube = FakeKube()
    store = ModificationStore(kube)  # type: ignore[arg-type]
    request = lesson_request()
    [a], _ = approved_requests(goal_with([request], approve=request["id"]))
    await store.store(agent_raw(make_agent), [a])

    reverted, missing, data = await store.revert(agent_raw(make_agent), [a.id, "lesson-unknown"])

    assert [r["id"] for r in reverted] == [a.id] and missing == ["lesson-unknown"]
    rec = json.loads(kube.objects[store.url("team-a", "coder")]["data"][a.id])
    assert rec["reverted"] is True and rec["revertedBy"] == "kubectl-annotate" and rec["lesson"] == a.record["lesson"]
    assert modifications.active(data) == []
    again, _, _ = await store.revert(agent_raw(make_agent), [a.id])
    assert again == []


def test_revert_annotation_may_name_several_ids():
    assert modifications.revert_ids({"overseer.dev/revert": "a, b,,c"}) == ["a", "b", "c"]
    assert modifications.revert_ids({}) == []


# --- using approved modifications ----------------------------------------------------------------


def config_map_data(*records: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: json.dumps(r) for r in records}


def tool_record(id_: str = "tool-word_count-1", **tool: Any) -> dict[str, Any]:
    return {"id": id_, "kind": "scriptTool", "goal": "learn", "approvedAt": "2026-01-02T00:00:00Z",
            "reverted": False, "tool": {"name": "word_count", "description": "Count words", "inputSchema": SCHEMA,
                                        "language": "python", "script": WORD_COUNT, **tool}}


def test_later_goals_get_active_lessons_and_tools_only():
    data = config_map_data(
        {"id": "lesson-1", "kind": "lesson", "lesson": "Lint first", "approvedAt": "2026-01-01T00:00:00Z",
         "reverted": False},
        {"id": "lesson-2", "kind": "lesson", "lesson": "Reverted", "approvedAt": "2026-01-01T00:00:01Z",
         "reverted": True},
        tool_record(),
        tool_record("tool-broken-1", name="broken", script="def (:"),
    )
    data["garbage"] = "not json"

    approved = approved_from(data)

    assert approved.lessons == ["Lint first"]
    assert [t.name for t in approved.tools] == ["word_count"]
    assert approved.tools[0].risk == "medium"


def test_an_approved_tool_never_displaces_a_built_in_one():
    registry = default_registry()
    register_approved(registry, approved_from(config_map_data(tool_record(), tool_record("tool-bash-1", name="bash")))
                      .tools)

    assert "word_count" in registry
    assert type(registry.get("bash")).__name__ == "BashTool"


async def test_a_script_tool_gets_its_input_on_stdin_and_returns_what_it_prints(tmp_path: Path):
    tool = approved_from(config_map_data(tool_record())).tools[0]
    registry = ToolRegistry([tool])

    result = await registry.run("word_count", {"text": "one two three"}, ToolContext(workspace=tmp_path))

    assert (result.is_error, result.content.strip()) == (False, "3")


async def test_a_script_tool_runs_in_the_workspace_and_reports_failures(tmp_path: Path):
    (tmp_path / "marker.txt").write_text("here")
    script = "import os, sys\nprint(sorted(os.listdir('.')))\nprint('boom', file=sys.stderr)\nsys.exit(3)\n"
    tool = ScriptTool("tool-x-1", "x", "x", {"type": "object"}, script)

    result = await tool.run({}, ToolContext(workspace=tmp_path))

    assert result.is_error and "exit code 3" in result.content
    assert "marker.txt" in result.content and "boom" in result.content


async def test_a_script_tool_is_stopped_at_its_timeout(tmp_path: Path):
    tool = ScriptTool("tool-slow-1", "slow", "x", {"type": "object"}, "import time\ntime.sleep(30)\n", timeout=0.5)

    result = await tool.run({}, ToolContext(workspace=tmp_path))

    assert result.is_error and "did not finish within" in result.content


async def test_a_script_tools_output_is_capped(tmp_path: Path):
    tool = ScriptTool("tool-loud-1", "loud", "x", {"type": "object"}, "print('x' * 1_000_000)\n")

    result = await tool.run({}, ToolContext(workspace=tmp_path, output_limit=1000))

    assert not result.is_error and len(result.content) < 1300 and "output truncated" in result.content


class CountingKube(FakeKube):
    """FakeKube that counts the reads an Agent reconcile makes of the server."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, url: str) -> dict[str, Any] | None:
        self.reads += 1
        return await super().get(url)


async def test_an_agent_counts_its_modifications_from_the_watched_configmap_without_reading_the_server(make_agent):
    from overseer.operator.agents import AgentReconciler
    from overseer.operator.runtime import Runtime
    from overseer.operator.settings import Settings

    kube = CountingKube()
    store = ModificationStore(kube)  # type: ignore[arg-type]
    first, second = lesson_request("one"), lesson_request("two")
    approved = [approved_requests(goal_with([r], approve=r["id"]))[0][0] for r in (first, second)]
    await store.store(agent_raw(make_agent), approved)
    await store.revert(agent_raw(make_agent, {modifications.REVERT: approved[0].id}), [approved[0].id])
    rt = Runtime(kube=kube, settings=Settings(), events=None)  # type: ignore[arg-type]
    rt.stores["configmaps"].upsert(kube.objects[store.url("team-a", "coder")])  # as the watch delivers it
    reconciler = AgentReconciler(rt)
    kube.reads = 0

    assert await reconciler.sync_modifications(agent_raw(make_agent)) == 1
    # The revert annotation stays on the Agent after the revert is done: nothing left to read or write.
    assert await reconciler.sync_modifications(agent_raw(make_agent, {modifications.REVERT: approved[0].id})) == 1
    assert kube.reads == 0
