"""Fixtures for end-to-end tests on the local control plane (e2e/cluster/up.sh).

`make cluster` first keeps the cluster running between test runs (fast re-runs); otherwise
the ``cluster`` fixture starts it and stops it again at the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e import harness
from e2e.harness import Cluster, K8s, Kubectl, OperatorProcess
from e2e.agent_runner import AgentRunner, ModelServer
from e2e.world import FAST, World
from tests.support.servers import PostgresServer

E2E_DIR = Path(__file__).resolve().parent
E2E_TIMEOUT_S = 600
OPERATORS = pytest.StashKey[list[OperatorProcess]]()


# ---------------------------------------------------------------------------------------------
# hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the local control plane (make cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_timeout = config.pluginmanager.hasplugin("timeout")
    for item in items:
        if E2E_DIR not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if has_timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for op in item.stash.get(OPERATORS, []):
            report.sections.append(
                (f"overseer-operator log tail ({op.namespace}, {op.log_path})", harness.tail(op.log_text(), 80))
            )


# ---------------------------------------------------------------------------------------------
# session fixtures


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    stamp = harness.control_plane_dir() / "bin" / ".stamp"
    if not stamp.is_file():
        pytest.fail(f"control plane binaries not built ({stamp} missing): run make cluster-build", pytrace=False)
    try:
        c = harness.start_cluster()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield c
    if c.started_here:
        harness.stop_cluster()


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    """``kubectl(*args, input=None, check=True, timeout=60) -> CompletedProcess`` (text)."""
    return Kubectl(cluster)


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> Iterator[K8s]:
    """``.api_client`` plus ``.core``, ``.custom``, ``.rbac``, ``.networking``, ``.apiextensions``."""
    client = K8s(cluster)
    yield client
    client.close()


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    """Apply crds/*.yaml (server-side) and wait until every CRD is Established, and until policies
    an earlier run left in the cluster admit Goals again (an API server restart leaves a policy
    whose paramKind is a CRD failing closed for a while)."""
    if not harness.crd_files():
        pytest.skip(f"no CRD manifests in {harness.CRDS_DIR}: run make crds")
    names = harness.install_crds(kubectl)
    harness.wait_for(lambda: harness.policies_configured(kubectl), timeout=240,
                     description="the API server to resolve the admission policies' paramKind (Agent)")
    return names


@pytest.fixture(scope="session")
def admission_policies(kubectl: Kubectl, crds: list[str]) -> list[str]:
    """The shipped admission policies (charts/overseer/files/admission), in force for every test
    that runs the operator: agents' normal work has to pass them."""
    return harness.install_admission_policies(kubectl)


# ---------------------------------------------------------------------------------------------
# per-test fixtures


@pytest.fixture
def wait_for():
    """``wait_for(predicate, timeout=30, interval=0.2, description=...)``."""
    return harness.wait_for


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s: K8s) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security ``restricted``, with its default ServiceAccount."""
    name = harness.dns_name(request.node.name)
    harness.create_namespace(k8s, name)
    yield name
    harness.delete_namespace(k8s, name)  # not waited for: finalization runs in the background


@pytest.fixture
def exit_pod(k8s: K8s):
    """``exit_pod(namespace, pod_name, code)``: the pod's container exits with ``code``."""

    def _exit_pod(namespace: str, pod_name: str, code: int, timeout: float = 30) -> None:
        harness.exit_pod(k8s, namespace, pod_name, code, timeout=timeout)

    return _exit_pod


class OperatorFactory:
    """``operator.start(namespace, *extra_args, env=None) -> OperatorProcess`` (also callable)."""

    def __init__(self, cluster: Cluster, tmp_path: Path, item: pytest.Item):
        self.cluster = cluster
        self.tmp_path = tmp_path
        self.processes: list[OperatorProcess] = []
        item.stash[OPERATORS] = self.processes

    def start(self, namespace: str, *extra_args: str, env: dict[str, str] | None = None,
              startup_timeout: float = 30, executable: Path | None = None) -> OperatorProcess:
        log_path = self.tmp_path / f"operator-{len(self.processes) + 1}-{namespace}.log"
        op = OperatorProcess(self.cluster, namespace, log_path, extra_args, env, startup_timeout, executable)
        self.processes.append(op)
        return op.start()

    __call__ = start

    def stop_all(self) -> None:
        for op in reversed(self.processes):
            op.stop()


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(cluster, tmp_path, request.node)
    yield factory
    factory.stop_all()


@pytest.fixture
def operator_env() -> dict[str, str]:
    """Extra environment of the `world` operator; override it in a test module."""
    return {}


@pytest.fixture
def operator_executable() -> Path | None:
    """overseer-operator of the `world` (None: this venv's); override in a test module."""
    return None


@pytest.fixture
def agent_executable() -> Path | None:
    """overseer-agent run for goal pods by `agents` (None: this venv's); override in a test module."""
    return None


@pytest.fixture
def world(namespace: str, kubectl: Kubectl, crds: Any, admission_policies: Any, operator: OperatorFactory,
          exit_pod: Any, operator_env: dict[str, str], operator_executable: Path | None) -> World:
    """A namespace with the operator running on it (fast retries) and an API key Secret."""
    op = operator.start(namespace, env={**FAST, **operator_env}, executable=operator_executable)
    w = World(namespace, kubectl, op, exit_pod)
    w.secret()
    return w


@pytest.fixture
def agents(world: World, cluster: Cluster, k8s: K8s, tmp_path: Path, agent_executable: Path | None) -> Iterator[Any]:
    """start(scenario_turns, **agent) -> (model server, runner): a scripted model for this
    namespace's goals, an Agent pointing at it, and the kubelet's part for goal pods.
    workspace: the Agent's spec.workspace (flow style, e.g. "{size: 1Gi}"); none gives emptyDirs.
    warm_pool: the Agent's spec.warmPool (idle pods kept started); max_goals: its maxConcurrentGoals."""
    started: list[Any] = []

    def start(conversations: dict[str, list[Any]], capabilities: str = "[]", budget: str = "",
              faults: Any = None, workspace: str | None = None, warm_pool: int = 0,
              max_goals: int = 2) -> tuple[ModelServer, AgentRunner]:
        scenario: dict[str, Any] = {"follow_history": True,
                                    "conversations": {f"{world.ns}/{k}": v for k, v in conversations.items()}}
        if faults:
            scenario["faults"] = faults
        model = ModelServer(scenario, tmp_path)
        runner = AgentRunner(cluster, k8s, world.ns, tmp_path, executable=agent_executable).start()
        started.extend([model, runner])
        world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: coder}}
spec:
  role: Python engineer
  model: {{name: claude-sonnet-5-5, maxTokens: 4096, baseURL: "{model.url}",
           apiKeySecretRef: {{name: anthropic, key: api-key}}}}
  capabilities: {capabilities}
  maxConcurrentGoals: {max_goals}
{budget}
{f"  workspace: {workspace}" if workspace else ""}
{f"  warmPool: {warm_pool}" if warm_pool else ""}
""")
        world.wait_condition("agent", "coder", "Ready", "True")
        return model, runner

    yield start
    for thing in reversed(started):
        thing.stop()


@pytest.fixture(scope="module")
def ledger_db() -> Iterator[PostgresServer]:
    """A PostgreSQL of its own for the model gateway's spend ledger, one per test module."""
    base = Path(tempfile.mkdtemp(prefix="overseer-ledger-pg-"))
    server = PostgresServer(base).init()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)
