"""What every fault scenario is handed: the local control plane, clients, and the parts it may break.

A scenario is `def scenario(ctx: Context, full: bool) -> Row`. It takes a fresh namespace with
`ctx.namespace(...)`, starts the operator (`ctx.operator(...)`), and, when its goals need a real
agent process, a scripted model and the kubelet's part (`ctx.agents(...)`); PostgreSQL and Redis
are started on first use and can be stopped and started again by the scenario (`ctx.postgres`,
`ctx.redis`); model gateways go in front of the model with `ctx.gateways(n)`. Everything started
through the context is stopped by `ctx.close()`, so a scenario that fails half way leaves nothing
running.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e import harness
from e2e.agent_runner import AgentRunner, ModelServer
from e2e.gateway import GatewayProcess, Service, gateway_kubeconfig
from e2e.harness import Cluster, K8s, Kubectl, OperatorProcess
from e2e.world import FAST, World
from tests.support.servers import PostgresServer, RedisServer


class Context:
    """The run's cluster and clients, and everything a scenario starts (stopped by `close`)."""

    def __init__(self, cluster: Cluster, workdir: Path):
        self.cluster = cluster
        self.kubectl = Kubectl(cluster)
        self.k8s = K8s(cluster)
        self.workdir = workdir           # logs of the operators, agents and servers of this run
        self._postgres: PostgresServer | None = None
        self._redis: RedisServer | None = None
        self._namespaces: list[str] = []
        self._stoppers: list[Callable[[], Any]] = []

    # ---- servers the scenarios may stop and start again (by the PID they recorded) --------------

    @property
    def postgres(self) -> PostgresServer:
        """The knowledge base's PostgreSQL (started on first use); `.dsn`, `.stop()`, `.start()`."""
        if self._postgres is None:
            base = self.workdir / "postgres"
            base.mkdir(parents=True, exist_ok=True)
            self._postgres = PostgresServer(base).init()
        return self._postgres

    @property
    def knowledge_url(self) -> str:
        """The admin login the operator is given (OVERSEER_KNOWLEDGE_ADMIN_URL)."""
        return self.postgres.dsn

    @property
    def redis(self) -> RedisServer:
        """Redis for goal pods (started on first use); `.url`, `.stop()`, `.start()`."""
        if self._redis is None:
            self._redis = RedisServer(self.workdir / "redis").start()
        return self._redis

    # ---- namespaces, the operator, agents -----------------------------------------------------

    def namespace(self, label: str) -> str:
        """A fresh namespace (Pod Security restricted, default ServiceAccount present), deleted by close."""
        name = harness.create_namespace(self.k8s, harness.dns_name(label, prefix="chaos-"))
        self._namespaces.append(name)
        return name

    def operator(self, namespace: str, *args: str, env: dict[str, str] | None = None,
                 knowledge: bool = False, redis: bool = False) -> OperatorProcess:
        """`overseer-operator --namespace NS ARGS` with fast retries, started (its /healthz answers);
        knowledge/redis hand it the context's PostgreSQL/Redis. `.kill()` is a SIGKILL, `.start()` again
        restarts it with the same arguments."""
        full_env = dict(FAST)
        if knowledge:
            full_env["OVERSEER_KNOWLEDGE_ADMIN_URL"] = self.knowledge_url
        if redis:
            full_env["OVERSEER_AGENT_REDIS_URL"] = self.redis.url
        full_env.update(env or {})
        count = sum(1 for p in self.workdir.glob(f"operator-*-{namespace}.log")) + 1
        # A process start is seconds of imports: on a shared machine at a load of 15-20 it outlasted
        # the default 30 s, and a restart after a kill failed the scenario.
        op = OperatorProcess(self.cluster, namespace, self.workdir / f"operator-{count}-{namespace}.log", args,
                             full_env, startup_timeout=120)
        self._stoppers.append(op.stop)
        return op.start()

    def world(self, namespace: str, op: OperatorProcess) -> World:
        """The kubectl verbs of the e2e tests on namespace, with its API key Secret `anthropic` created."""
        w = World(namespace, self.kubectl, op,
                  lambda ns, pod, code, timeout=30: harness.exit_pod(self.k8s, ns, pod, code, timeout=timeout))
        w.secret()
        return w

    def agents(self, world: World, conversations: dict[str, list[Any]], faults: Any = None, agent: str = "coder",
               max_goals: int = 2, spec: str = "", env: dict[str, str] | None = None
               ) -> tuple[ModelServer, AgentRunner]:
        """A scripted model answering `conversations` (goal name -> turns, as e2e/test_agent_runtime.py
        writes them), an Agent `agent` calling it, and the kubelet's part for the namespace's goal pods
        (a real overseer-agent process per Running pod). `spec`: more lines of the Agent's spec, indented
        two spaces. Waits until the Agent is Ready."""
        folder = self.workdir / f"agents-{world.ns}-{agent}"
        folder.mkdir(parents=True, exist_ok=True)
        scenario: dict[str, Any] = {"follow_history": True,
                                    "conversations": {f"{world.ns}/{k}": v for k, v in conversations.items()}}
        if faults:
            scenario["faults"] = faults
        model = ModelServer(scenario, folder)
        self._stoppers.append(model.stop)
        runner = AgentRunner(self.cluster, self.k8s, world.ns, folder, extra_env=dict(env or {})).start()
        self._stoppers.append(runner.stop)
        world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: {agent}}}
spec:
  role: Python engineer
  model: {{name: claude-sonnet-5-5, maxTokens: 4096, baseURL: "{model.url}",
           apiKeySecretRef: {{name: anthropic, key: api-key}}}}
  maxConcurrentGoals: {max_goals}
{spec}
""")
        world.wait_condition("agent", agent, "Ready", "True", timeout=60)
        return model, runner

    def gateways(self, replicas: int) -> tuple[Service, list[GatewayProcess]]:
        """`replicas` model gateways behind one Service, as the chart runs them: their spend ledger
        in the context's PostgreSQL, their budget counters in its Redis. Hand `service.url` to the
        operator as OVERSEER_GATEWAY_URL and goal pods call the model through it."""
        kubeconfig = gateway_kubeconfig(self.cluster, self.kubectl, self.k8s, self.workdir / "gateway.kubeconfig")
        env = {"OVERSEER_GATEWAY_DATABASE_URL": self.postgres.dsn, "OVERSEER_GATEWAY_REDIS_URL": self.redis.url,
               "OVERSEER_GATEWAY_STATUS_INTERVAL_SECONDS": "0.5"}
        count = len(list(self.workdir.glob("gateway-*.log")))
        started = []
        for n in range(count + 1, count + 1 + replicas):
            gateway = GatewayProcess(self.cluster, kubeconfig, self.workdir / f"gateway-{n}.log", env=env)
            self._stoppers.append(gateway.stop)
            started.append(gateway)
        service = Service([gateway.url for gateway in started])
        self._stoppers.append(service.close)
        return service, started

    def on_close(self, stop: Callable[[], Any]) -> None:
        """Run stop() at close (before the namespaces go), for things a scenario starts itself."""
        self._stoppers.append(stop)

    def close(self) -> None:
        """Stop what was started, newest first; delete the namespaces; stop PostgreSQL and Redis."""
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                print(f"chaos: stopping {stop!r} failed: {e}")
        self._stoppers.clear()
        for ns in self._namespaces:
            harness.delete_namespace(self.k8s, ns)
        self._namespaces.clear()
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            try:
                self._postgres.stop()
            except RuntimeError:  # a scenario left it stopped
                pass
            shutil.rmtree(self._postgres.dir.parent, ignore_errors=True)
        self.k8s.close()
