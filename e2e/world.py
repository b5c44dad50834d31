"""A test namespace with the operator running on it, and the kubectl verbs tests use."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from e2e.harness import wait_for

FAST = {"OVERSEER_RETRY_BACKOFF_SECONDS": "1", "OVERSEER_SECRET_RECHECK_SECONDS": "1",
        "OVERSEER_RESYNC_SECONDS": "600"}

CAPABILITY = """
apiVersion: overseer.dev/v1alpha1
kind: Capability
metadata: {{name: {name}}}
spec:
  description: "Run the test suite and report failures"
  risk: low
  command: {{run: ["python", "-m", "pytest", "-q"]}}
  inputSchema: {{type: object, properties: {{path: {{type: string}}}}}}
  egress: [{{cidr: {cidr}, ports: [443]}}]
  requires: {requires}
"""

AGENT = """
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: {name}, labels: {labels}}}
spec:
  role: "Senior Python engineer"
  model: {{name: claude-sonnet-5-5, maxTokens: 8192, apiKeySecretRef: {{name: {secret}, key: api-key}}}}
  capabilities: {capabilities}
  maxConcurrentGoals: {max}
  resources: {{requests: {{cpu: 250m, memory: 256Mi}}, limits: {{cpu: "1", memory: 1Gi}}}}
{quota}
"""

GOAL = """
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {{name: {name}}}
spec:
  description: {description}
  {agent}
  priority: {priority}
  dependsOn: {depends}
  maxRetries: {retries}
{extra}
"""


class World:
    """A namespace with the operator running on it, and the kubectl verbs the tests use."""

    def __init__(self, namespace: str, kubectl: Callable[..., Any], op: Any, exit_pod: Callable[..., None]):
        self.ns = namespace
        self.kubectl = kubectl
        self.op = op
        self.exit_pod = exit_pod

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-n", self.ns, "-f", "-", input=manifest)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", "-n", self.ns, kind, name, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", "-n", self.ns, kind, *selector, "-o", "json").stdout)["items"]

    def secret(self, name: str = "anthropic") -> None:
        self.kubectl("create", "secret", "generic", name, "-n", self.ns, "--from-literal=api-key=test-key")

    def capability(self, name: str = "pytest", cidr: str = "10.0.0.0/8", requires: str = "[]") -> None:
        self.apply(CAPABILITY.format(name=name, cidr=cidr, requires=requires))

    def agent(self, name: str = "coder", max: int = 2, capabilities: str = "[]", quota: str = "",
              secret: str = "anthropic", labels: str = "{}") -> None:
        quota_line = f"  quota: {quota}" if quota else ""
        self.apply(AGENT.format(name=name, max=max, capabilities=capabilities, quota=quota_line, secret=secret,
                                labels=labels))

    def goal(self, name: str, agent: str = "coder", priority: int = 0, depends: str = "[]", retries: int = 0,
             extra: str = "", selector: str | None = None,
             description: str = "Make tests/test_parser.py pass without changing the tests.") -> None:
        agent_line = f"agentSelector: {{matchLabels: {selector}}}" if selector else f"agentRef: {{name: {agent}}}"
        self.apply(GOAL.format(name=name, agent=agent_line, priority=priority, depends=depends, retries=retries,
                               extra=extra, description=json.dumps(description)))

    def phase(self, goal: str) -> str | None:
        obj = self.get("goal", goal)
        return ((obj or {}).get("status") or {}).get("phase")

    def wait_phase(self, goal: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        try:
            return wait_for(lambda: (g := self.get("goal", goal)) and (g.get("status") or {}).get("phase") == phase and g,
                            timeout=timeout, description=f"goal {goal} in phase {phase}")
        except AssertionError as e:  # the phase when the wait gave up, not when it began
            raise AssertionError(f"{e} (now {self.phase(goal)})") from None

    def condition(self, kind: str, name: str, ctype: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)

    def wait_condition(self, kind: str, name: str, ctype: str, status: str, reason: str | None = None,
                       timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(kind, name, ctype)
            return c if c and c["status"] == status and (reason is None or c["reason"] == reason) else None
        return wait_for(check, timeout=timeout,
                        description=f"{kind} {name} condition {ctype}={status} {reason or ''}")

    def goal_pods(self, goal: str) -> list[dict[str, Any]]:
        return self.items("pods", "-l", f"overseer.dev/goal={goal}")

    def running_pod(self, goal: str) -> str:
        g = self.wait_phase(goal, "Running")
        return g["status"]["pod"]

    def finish(self, goal: str, code: int) -> None:
        self.exit_pod(self.ns, self.running_pod(goal), code)

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.items("events", "--field-selector", f"involvedObject.name={name}")
