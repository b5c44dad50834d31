"""Capabilities reached from a goal's agent, end to end: a real MCP server (the same SDK the
agent uses, streamable HTTP on loopback), a real HTTP service taking a token from a Secret, a
server that is down, and `requires` chains resolved onto the Agent."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from e2e.harness import wait_for
from e2e.world import World
from tests.support.mcp_server import ThreadedToolServer

SECRET = "Bearer s3cret-token"


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"reply": [{"tool_use": {"name": name, "input": args}}]}


def text(value: str) -> dict[str, Any]:
    return {"reply": [{"text": value}]}


def tool_results(model: Any) -> list[dict[str, Any]]:
    """Every tool_result the model was sent, in order (each request repeats the history: the last has them all)."""
    last = model.requests()[-1]["body"]["messages"]
    return [b for m in last if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"]


def content(result: dict[str, Any]) -> str:
    """A tool result's text as the tool gave it, without the untrusted-data wrapper the agent puts
    around every result (overseer.agent.untrusted)."""
    c = result["content"]
    text = c if isinstance(c, str) else "".join(part.get("text", "") for part in c)
    wrapped = re.fullmatch(r'<tool-output tool="[^"]*" trust="untrusted">\n(.*)\n</tool-output>', text, re.S)
    return wrapped.group(1) if wrapped else text


@pytest.fixture
def mcp_server() -> Iterator[ThreadedToolServer]:
    server = ThreadedToolServer().start()
    yield server
    server.close()


class Tickets(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Tickets.seen.append((self.path, self.headers.get("Authorization"), body))
        ok = self.headers.get("Authorization") == SECRET
        self.send_response(201 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"id": 42, "title": body.get("title")} if ok else {"error": "no token"}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tickets() -> Iterator[str]:
    Tickets.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Tickets)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tickets"
    server.shutdown()
    server.server_close()


def test_a_goal_uses_an_mcp_server_and_an_http_service(world: World, agents: Any, kubectl: Any,
                                                       mcp_server: ThreadedToolServer, tickets: str) -> None:
    kubectl("create", "secret", "generic", "tracker", "-n", world.ns, f"--from-literal=token={SECRET}")
    world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {{name: weather}}
spec:
  description: The team's weather service
  mcp: {{url: "{mcp_server.url}", toolRisk: {{alerts: high}}}}
---
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {{name: tickets}}
spec:
  description: Open a ticket in the tracker
  http:
    url: "{tickets}"
    headers: [{{name: Authorization, secretKeyRef: {{name: tracker, key: token}}}}]
  inputSchema: {{type: object, properties: {{title: {{type: string}}}}, required: [title]}}
""")
    found = world.wait_condition("capability", "weather", "ToolsDiscovered", "True", "ToolsListed")
    assert world.get("capability", "weather")["status"]["tools"] == ["forecast", "alerts", "unlock"]
    assert "3 tools" in found["message"]
    columns = kubectl("get", "capability", "weather", "-n", world.ns).stdout
    assert "TOOLS" in columns.splitlines()[0] and " 3 " in columns.splitlines()[1]

    model, runner = agents({"storm-watch": [
        tool("weather__forecast", city="Oslo", days=2),
        tool("tickets", title="Storm in Oslo"),
        tool("weather__unlock"),
        # The server announces the new tool on its own stream; a real model takes a moment too.
        {**tool("weather__shout", text="storm"), "delay": 2},
        text("Forecast read, ticket 42 opened, and shouted."),
    ]}, capabilities="[weather, tickets]")
    world.goal("storm-watch")
    world.wait_phase("storm-watch", "Succeeded", timeout=90)

    results = tool_results(model)
    assert [content(r) for r in results[:1]] == ["sunny in Oslo for 2 day(s)"]
    assert "HTTP 201" in content(results[1]) and '"id": 42' in content(results[1])
    assert content(results[3]) == "STORM", "the tool the server added mid-goal was offered and called"
    assert not any(r.get("is_error") for r in results)
    first_tools = {t["name"]: t for t in model.requests()[0]["body"]["tools"]}
    assert first_tools["weather__forecast"]["input_schema"]["required"] == ["city"], "the server's own schema"
    assert "weather__shout" not in first_tools
    assert "weather__shout" in {t["name"] for t in model.requests()[-1]["body"]["tools"]}
    assert [(path, auth) for path, auth, _ in Tickets.seen] == [("/tickets", SECRET)]
    assert SECRET not in json.dumps(model.requests()), "the model never sees the Secret"
    opened = [h for h in mcp_server.server.headers if h.get("mcp-method") in ("server/discover", "initialize")]
    assert len(opened) == 2, "one session for the operator's probe, one for the goal pod"

    def counted() -> dict[str, Any] | None:
        st = world.get("capability", "weather")["status"]
        return st if st.get("calls") == 3 else None
    weather = wait_for(counted, timeout=30, description="weather's calls counted by the operator")
    assert weather["failures"] == 0 and weather["latencyP50Ms"] >= 0
    assert world.get("capability", "tickets")["status"]["calls"] == 1
    header = kubectl("get", "capability", "weather", "-n", world.ns).stdout.splitlines()[0].split()
    assert header[-5:-1] == ["TOOLS", "CALLS", "FAILURES", "P50-MS"]


def test_a_server_that_is_down_is_named_and_its_calls_fail_in_a_way_the_model_can_act_on(
        world: World, agents: Any, kubectl: Any, mcp_server: ThreadedToolServer) -> None:
    world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {{name: weather}}
spec: {{description: The team's weather service, mcp: {{url: "{mcp_server.url}", tools: [forecast], timeout: 5s}}}}
""")
    world.wait_condition("capability", "weather", "ToolsDiscovered", "True")
    mcp_server.stop()
    kubectl("patch", "capability", "weather", "-n", world.ns, "--type=merge",
            "-p", '{"spec": {"description": "The weather service (moved)"}}')
    down = world.wait_condition("capability", "weather", "ToolsDiscovered", "False", "ServerUnreachable", timeout=60)
    assert mcp_server.url in down["message"]
    assert world.get("capability", "weather")["status"]["tools"] == ["forecast"], "the last tools found stay shown"

    model, runner = agents({"forecast": [
        tool("weather__forecast", city="Oslo"),
        text("The weather service is down; I reported that instead."),
    ]}, capabilities="[weather]")
    world.goal("forecast")
    world.wait_phase("forecast", "Succeeded", timeout=90)

    [result] = tool_results(model)
    assert result["is_error"]
    assert "unreachable" in content(result) and mcp_server.url in content(result)
    assert "go on without this tool" in content(result)
    failed = wait_for(lambda: (st := world.get("capability", "weather")["status"]).get("failures") == 1 and st,
                      timeout=30, description="the failed call counted")
    assert failed["calls"] == 1


def test_requires_chains_of_three_reach_the_agent(world: World, agents: Any, kubectl: Any) -> None:
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: lint}
spec: {description: Lint the code, command: {run: ["cat"]}, requires: [fmt]}
---
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: fmt}
spec: {description: Format the code, command: {run: ["cat"]}, requires: [parser]}
""")
    lint = world.wait_condition("capability", "lint", "Ready", "False", "RequirementNotReady")
    assert "fmt (MissingRequirement)" in lint["message"]
    world.apply("""
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {name: parser}
spec:
  description: Parse a file
  command: {run: ["cat"]}
  egress: [{cidr: 10.7.0.0/16, ports: [8443]}]
""")
    world.wait_condition("capability", "lint", "Ready", "True", timeout=60)

    model, runner = agents({"tidy": [tool("parser", path="main.py"), text("Parsed.")]}, capabilities="[lint]")
    ready = world.wait_condition("agent", "coder", "CapabilitiesReady", "True")
    assert ready["message"] == "3 capabilities ready (2 through requires)"
    policy = world.get("networkpolicy", "overseer-agent-coder")
    assert {"to": [{"ipBlock": {"cidr": "10.7.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8443}]} in \
        policy["spec"]["egress"], "the egress of a capability required two steps away"
    role = world.get("role", "overseer-agent-coder")
    assert next(r for r in role["rules"] if "capabilities" in r["resources"])["resourceNames"] == \
        ["fmt", "lint", "parser"]

    world.goal("tidy")
    world.wait_phase("tidy", "Succeeded", timeout=90)
    [result] = tool_results(model)
    assert not result.get("is_error") and "main.py" in content(result), "the agent's own token read parser"

    kubectl("delete", "capability", "parser", "-n", world.ns)
    missing = world.wait_condition("agent", "coder", "CapabilitiesReady", "False", "CapabilityNotFound", timeout=60)
    assert "parser (needed by lint -> fmt -> parser) does not exist" in missing["message"]
    wait_for(lambda: world.condition("capability", "lint", "Ready")["status"] == "False", timeout=60,
             description="lint no longer Ready")
