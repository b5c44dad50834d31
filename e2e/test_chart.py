"""The Helm chart with the real Helm on the real API server: lint, schema errors, install,
upgrade and uninstall in cluster-wide and namespace-scoped mode, with the operator's replicas
running exactly as the Deployment says, as the chart's ServiceAccount (e2e/chart.py), and goal pods calling
the model through the gateway the chart runs."""

from __future__ import annotations

import collections
import json
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
import yaml

from e2e import harness
from e2e.agent_runner import AgentRunner, ModelServer
from e2e.chart import (CHART, GatewayPods, OperatorPods, adopt_cluster_objects, exists, helm, helm_path, key, leader_identity, loopback_ports,
                       objects)
from e2e.harness import wait_for
from e2e.world import World
from overseer.operator.settings import ServiceEgress

# Not "overseer": manifests/base (test_rbac, test_kustomize) installs objects named overseer-*
# without Helm, which a release of that name would refuse to take over.
RELEASE = "ovs"
FULLNAME = "ovs-overseer"
OPERATOR = f"{FULLNAME}-operator"
FAST = ["--set", "config.retryBackoffSeconds=1", "--set", "config.secretRecheckSeconds=1"]
PORT_FLAGS = ("--health-port", "--metrics-port")


@pytest.fixture(scope="module", autouse=True)
def built_helm() -> Path:
    if not helm_path().exists():
        pytest.fail(f"{helm_path()} missing: run make helm-build", pytrace=False)
    return helm_path()


@pytest.fixture
def kube_helm(cluster: harness.Cluster):
    def run(*args: str, check: bool = True, timeout: float = 300):
        return helm(*args, kubeconfig=cluster.kubeconfig, check=check, timeout=timeout)
    return run


@pytest.fixture
def release_ns(k8s: harness.K8s, kube_helm: Any, kubectl: harness.Kubectl) -> Iterator[str]:
    """A namespace for the release (Pod Security restricted, as the README asks); uninstalled after,
    and the admission policies the release took over put back for the tests that follow."""
    ns = harness.create_namespace(k8s, harness.dns_name("release"))
    yield ns
    kube_helm("uninstall", RELEASE, "-n", ns, "--wait", "--ignore-not-found", check=False)
    harness.delete_namespace(k8s, ns)
    harness.install_admission_policies(kubectl)


def deployment(kubectl: harness.Kubectl, ns: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "deployment", OPERATOR, "-n", ns, "-o", "json").stdout)


def proc_view(pid: int) -> tuple[list[str], dict[str, str]]:
    """What a process really got: its argv and environment, from /proc."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in e)
    return argv, env


def assert_replicas_run_as_deployed(runner: OperatorPods, dep: dict[str, Any], ns: str,
                                    secrets: dict[str, str] | None = None) -> list[str]:
    """Each running replica has exactly the Deployment's args (listening ports aside) and
    environment, and a kubeconfig for the chart's ServiceAccount. Returns the pod names."""
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    expected_env = {}
    for var in container["env"]:
        if "value" in var:
            expected_env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
            expected_env[var["name"]] = ns
        else:
            expected_env[var["name"]] = (secrets or {})[var["valueFrom"]["secretKeyRef"]["name"]]
    pods = runner.running()
    for pod in pods:
        argv, env = proc_view(runner.processes[pod].proc.pid)
        assert Path(argv[1]).name == "overseer-operator", argv
        ran = argv[2:]
        assert len(ran) == len(args)
        for deployed, actual in zip(args, ran):
            if deployed.split("=", 1)[0] in PORT_FLAGS:
                assert actual.split("=", 1)[0] == deployed.split("=", 1)[0]
            else:
                assert actual == deployed
        assert {k: env.get(k) for k in expected_env} == expected_env
        assert not {k for k in env if k.startswith("OVERSEER_")} - set(expected_env), "env beyond the Deployment's"
        config = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
        token = config["users"][0]["user"]["token"]
        assert token and "client-certificate" not in json.dumps(config)
    return pods


def whoami(kubectl: harness.Kubectl, kubeconfig: Path) -> str:
    out = kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json").stdout
    return json.loads(out)["status"]["userInfo"]["username"]


def leading(log: str) -> bool:
    """Whether a replica's log says it leads now (its last word on the Lease)."""
    said = re.findall(r"(holding Lease \S+ as \S+: reconciling|no longer the leader)", log)
    return bool(said) and said[-1] != "no longer the leader"


def one_leader(runner: OperatorPods, kubectl: harness.Kubectl, ns: str) -> str:
    """The one running replica that leads, and holds the Lease the API server shows."""
    def leaders() -> list[str]:
        found = [p for p in runner.running() if leading(runner.log(p))]
        return found if len(found) == 1 else []
    pod = wait_for(leaders, timeout=60, description="exactly one replica holding the Lease")[0]
    lease = json.loads(kubectl("get", "lease", "overseer-operator", "-n", ns, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == leader_identity(runner.log(pod))
    return pod


# ---------------------------------------------------------------------------------------------


def test_chart_lints_strict_in_every_mode() -> None:
    for extra in ([], ["--set", "rbac.mode=namespaced", "--set", "watchNamespaces={a,b}"],
                  ["--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
                   "--set", "prometheusRule.enabled=true",
                   "--set", "grafanaDashboard.enabled=true", "--set", "knowledgeBase.existingSecret=kb",
                   "--set", "redis.existingSecret=redis"],
                  ["--set", "gateway.enabled=true", "--set", "gateway.database.existingSecret=gw-db"]):
        out = helm("lint", "--strict", str(CHART), *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("settings, says", [
    (["networkPolicy.redis.namespace=db", "networkPolicy.redis.cidrs={192.0.2.7/32}",
      "networkPolicy.redis.ports={6379}"], "networkPolicy.redis: set either namespace and podLabels"),
    (["networkPolicy.knowledgeBase.cidrs={192.0.2.8/32}"], "networkPolicy.knowledgeBase.ports: name the ports"),
    (["networkPolicy.redis.podLabels.app=redis", "networkPolicy.redis.ports={6379}"],
     "networkPolicy.redis.namespace: name the namespace"),
])
def test_a_service_the_network_policy_cannot_open_fails_helm_naming_the_value(settings: list[str], says: str) -> None:
    out = helm("template", "r", str(CHART), *[arg for s in settings for arg in ("--set", s)], check=False)
    assert out.returncode != 0 and says in out.stderr, out.stderr


def test_the_network_policy_values_reach_the_operator_as_its_settings() -> None:
    out = helm("template", "r", str(CHART), "--set", "networkPolicy.knowledgeBase.namespace=db",
               "--set", "networkPolicy.knowledgeBase.podLabels.app=postgresql",
               "--set", "networkPolicy.knowledgeBase.ports={5432}", "--set", "metrics.monitoringNamespace=monitoring",
               "--set", "gateway.podPort=8080")
    [dep] = [o for o in objects(out.stdout) if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["OVERSEER_KNOWLEDGE_EGRESS"]) == {"namespace": "db", "podLabels": {"app": "postgresql"},
                                                            "cidrs": [], "ports": [5432]}
    assert ServiceEgress.model_validate_json(env["OVERSEER_KNOWLEDGE_EGRESS"]).configured  # as the operator reads it
    assert (env["OVERSEER_MONITORING_NAMESPACE"], env["OVERSEER_GATEWAY_POD_PORT"]) == ("monitoring", "8080")


@pytest.mark.parametrize("setting, field", [
    ("replicas=two", "/replicas"),
    ("rbac.mode=everywhere", "/rbac/mode"),
    ("config.resyncSeconds=-5", "/config/resyncSeconds"),
    ("rbac.mode=namespaced", "/watchNamespaces"),
    ("networkPolicy.modelEgress.cidrs={example.com}", "/networkPolicy/modelEgress/cidrs/0"),
])
def test_a_wrong_value_fails_helm_install_naming_the_field(kube_helm: Any, release_ns: str, setting: str,
                                                           field: str) -> None:
    out = kube_helm("install", RELEASE, str(CHART), "-n", release_ns, "--set", setting, check=False)
    assert out.returncode != 0
    assert field in out.stderr and "schema" in out.stderr, out.stderr
    assert kube_helm("list", "-n", release_ns, "-q").stdout.strip() == ""


def test_install_runs_as_the_chart_says_then_upgrade_rolls_and_uninstall_keeps_only_crds(
        cluster: harness.Cluster, kubectl: harness.Kubectl, k8s: harness.K8s, kube_helm: Any, release_ns: str,
        namespace: str, tmp_path: Path) -> None:
    takeover = ["--force-conflicts"] if adopt_cluster_objects(kubectl, RELEASE, release_ns) else []
    kube_helm("install", RELEASE, str(CHART), "-n", release_ns, *FAST, *takeover, "--wait", "--timeout", "120s")
    manifest = objects(kube_helm("get", "manifest", RELEASE, "-n", release_ns).stdout)
    kinds = collections.Counter(o["kind"] for o in manifest)
    print(f"\nhelm install rendered {len(manifest)} objects: {dict(sorted(kinds.items()))}")
    admission = [o for f in sorted((CHART / "files" / "admission").glob("*.yaml"))
                 for o in yaml.safe_load_all(f.read_text()) if o]
    assert {key(o) for o in admission} <= {key(o) for o in manifest}
    assert kinds - collections.Counter(o["kind"] for o in admission) == collections.Counter({
        "CustomResourceDefinition": 3, "ServiceAccount": 1, "Deployment": 1, "PodDisruptionBudget": 1,
        "Service": 1, "ClusterRole": 5, "ClusterRoleBinding": 2, "Role": 2, "RoleBinding": 2})
    missing = [key(o) for o in manifest if not exists(kubectl, o)]
    assert not missing, f"rendered but not in the cluster: {missing}"
    for crd in ("agents", "capabilities", "goals"):
        got = json.loads(kubectl("get", "crd", f"{crd}.overseer.dev", "-o", "json").stdout)
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    view = json.loads(kubectl("get", "clusterrole", "view", "-o", "json").stdout)
    assert any("goals" in r.get("resources", []) for r in view["rules"]), "overseer-view aggregated into view"

    dep = deployment(kubectl, release_ns)
    assert dep["spec"]["replicas"] == 2 and dep["status"].get("readyReplicas") == 2
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args and "--all-namespaces" in args

    runner = OperatorPods(cluster, k8s, release_ns, tmp_path, release=RELEASE).start()
    model = agents = None
    try:
        wait_for(lambda: len(runner.running()) == 2, timeout=60, description="two operator replicas running")
        pods = assert_replicas_run_as_deployed(runner, dep, release_ns)
        for pod in pods:
            assert whoami(kubectl, tmp_path / f"kubeconfig-{pod}") == \
                f"system:serviceaccount:{release_ns}:{OPERATOR}"
        first_leader = one_leader(runner, kubectl, release_ns)
        health = f"http://127.0.0.1:{runner.ports[first_leader]['health']}"
        assert harness.http_ok(f"{health}/healthz") and harness.http_ok(f"{health}/readyz")

        # A sample Goal, worked on by the agent runtime against a scripted model.
        conversations = {f"{namespace}/{g}": [
            {"reply": [{"tool_use": {"name": "write_file", "input": {"path": f"{g}.txt", "content": "done\n"}}}]},
            {"reply": [{"text": f"Wrote {g}.txt."}]}] for g in ("hello", "after-upgrade")}
        model = ModelServer({"follow_history": True, "conversations": conversations}, tmp_path)
        agents = AgentRunner(cluster, k8s, namespace, tmp_path).start()
        world = World(namespace, kubectl, None, lambda *a, **k: None)
        world.secret()
        world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: coder}}
spec:
  role: Python engineer
  model: {{name: claude-sonnet-5-5, maxTokens: 4096, baseURL: "{model.url}",
           apiKeySecretRef: {{name: anthropic, key: api-key}}}}
""")
        world.wait_condition("agent", "coder", "Ready", "True", timeout=60)
        world.goal("hello")
        assert "Wrote hello.txt" in world.wait_phase("hello", "Succeeded", timeout=180)["status"]["result"]

        # helm upgrade with a changed value: a new template, the replicas replaced, the new ones
        # started with the new environment.
        generation = dep["metadata"]["generation"]
        kube_helm("upgrade", RELEASE, str(CHART), "-n", release_ns, "--reuse-values",
                  "--set", "config.workers=7", "--wait", "--timeout", "120s")
        dep = deployment(kubectl, release_ns)
        assert dep["metadata"]["generation"] > generation
        env = {v["name"]: v.get("value") for v in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OVERSEER_WORKERS"] == "7"
        wait_for(lambda: len(runner.running()) == 2 and not set(runner.running()) & set(pods), timeout=90,
                 description="the old replicas replaced by two new ones")
        wait_for(lambda: all(p in runner.finished for p in pods), description="the old replicas' exit codes")
        assert [runner.finished[p] for p in pods] == [0, 0], "the old replicas did not shut down cleanly"
        new_pods = assert_replicas_run_as_deployed(runner, dep, release_ns)
        assert all(proc_view(runner.processes[p].proc.pid)[1]["OVERSEER_WORKERS"] == "7" for p in new_pods)
        one_leader(runner, kubectl, release_ns)
        world.goal("after-upgrade")
        world.wait_phase("after-upgrade", "Succeeded", timeout=180)

        # helm uninstall: nothing of the release is left but the CRDs, kept by their policy.
        out = kube_helm("uninstall", RELEASE, "-n", release_ns, "--wait")
        assert "kept due to the resource policy" in out.stdout + out.stderr
        left = [key(o) for o in manifest if exists(kubectl, o)]
        assert sorted(k[1] for k in left) == ["CustomResourceDefinition"] * 3, left
        wait_for(lambda: not runner.running(), timeout=60, description="the replicas gone with their pods")
        labelled = kubectl("get", "all,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,"
                           "poddisruptionbudgets", "-A", "-l", f"app.kubernetes.io/instance={RELEASE}",
                           "-o", "name").stdout.split()
        assert labelled == []
        assert world.get("goal", "hello"), "Goals stay with their kept CRDs"
    finally:
        for thing in (agents, runner):
            if thing is not None:
                thing.stop()
        if model is not None:
            model.stop()


def test_namespaced_install_works_in_its_namespaces_only(
        cluster: harness.Cluster, kubectl: harness.Kubectl, k8s: harness.K8s, kube_helm: Any, release_ns: str,
        namespace: str, tmp_path: Path) -> None:
    other = harness.create_namespace(k8s, harness.dns_name("not-watched"))
    takeover = ["--force-conflicts"] if adopt_cluster_objects(kubectl, RELEASE, release_ns) else []
    kube_helm("install", RELEASE, str(CHART), "-n", release_ns, *FAST, *takeover, "--set", "rbac.mode=namespaced",
              "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s")
    manifest = objects(kube_helm("get", "manifest", RELEASE, "-n", release_ns).stdout)
    print(f"\nhelm install (namespaced) rendered {len(manifest)} objects")
    assert not exists(kubectl, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                "metadata": {"name": OPERATOR}})
    bindings = json.loads(kubectl("get", "clusterrolebindings", "-o", "json").stdout)["items"]
    sa = {"kind": "ServiceAccount", "name": OPERATOR, "namespace": release_ns}
    # Cluster-wide, namespaced mode binds only `get` on the admission policies Overseer ships, by
    # name (they are cluster-scoped objects): whether approvals are verified.
    cluster_wide = [b for b in bindings if sa in (b.get("subjects") or [])]
    assert [b["roleRef"]["name"] for b in cluster_wide] == [f"{OPERATOR}-admission-policies"], \
        "namespaced mode binds nothing else cluster-wide to the operator"
    rules = json.loads(kubectl("get", "clusterrole", f"{OPERATOR}-admission-policies", "-o", "json").stdout)["rules"]
    assert [(r["apiGroups"], r["verbs"], bool(r.get("resourceNames"))) for r in rules] == [
        (["admissionregistration.k8s.io"], ["get"], True)]

    runner = OperatorPods(cluster, k8s, release_ns, tmp_path, release=RELEASE).start()
    try:
        wait_for(lambda: len(runner.running()) == 2, timeout=60, description="two operator replicas running")
        assert_replicas_run_as_deployed(runner, deployment(kubectl, release_ns), release_ns)
        leader = one_leader(runner, kubectl, release_ns)

        exit_pod = lambda ns, pod, code: harness.exit_pod(k8s, ns, pod, code)  # noqa: E731
        watched = World(namespace, kubectl, None, exit_pod)
        watched.secret()
        watched.agent("coder")
        watched.wait_condition("agent", "coder", "Ready", "True", timeout=60)
        watched.goal("in-scope")
        watched.finish("in-scope", 0)
        watched.wait_phase("in-scope", "Succeeded")

        ignored = World(other, kubectl, None, exit_pod)
        ignored.secret()
        ignored.agent("coder")
        ignored.goal("out-of-scope")
        watched.goal("later")  # once this one is handled, the other namespace had its chance too
        watched.wait_phase("later", "Running")
        assert ignored.get("goal", "out-of-scope").get("status") is None
        assert ignored.get("agent", "coder").get("status") is None
        assert ignored.goal_pods("out-of-scope") == []
        # No crash: a replica exits only when it loses its Lease (by design; a slow machine can do that).
        assert all("no longer the leader" in runner.log(p) for p in runner.finished), runner.finished
        logs = "\n".join(runner.log(p) for p in runner.processes)
        assert "Forbidden" not in logs and "Traceback" not in logs, logs[-3000:]

        # The operator's own token, as an attacker holding it would use it.
        token = ["--kubeconfig", str(tmp_path / f"kubeconfig-{leader}")]
        denied = kubectl(*token, "get", "secret", "anthropic", "-n", other, check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
        everywhere = kubectl(*token, "get", "secrets", "-A", check=False)
        assert everywhere.returncode != 0 and "Forbidden" in everywhere.stderr
        assert kubectl(*token, "get", "secret", "anthropic", "-n", namespace, "-o", "name").stdout.strip()
        assert kubectl(*token, "auth", "can-i", "watch", "endpointslices.discovery.k8s.io", "-n",
                       "default").stdout.strip() == "yes"
    finally:
        runner.stop()
        harness.delete_namespace(k8s, other)


def test_listening_ports_are_the_only_rewrite() -> None:
    args = ["--leader-elect", "--all-namespaces", "--health-port=8081", "--metrics-port=9100"]
    rewritten, ports = loopback_ports(args)
    assert rewritten[:2] == args[:2]
    assert rewritten[2] == f"--health-port={ports['health']}"
    assert rewritten[3] == f"--metrics-port={ports['metrics']}"


def test_admission_policy_files_are_installed_as_they_are(tmp_path: Path) -> None:
    chart = tmp_path / "overseer"
    shutil.copytree(CHART, chart)
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": "overseer-test-policy"},
              "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["overseer.dev"], "apiVersions": ["*"],
                                                               "operations": ["UPDATE"], "resources": ["goals"]}]},
                       "validations": [{"expression": "true"}]}}
    admission = chart / "files" / "admission"
    for f in admission.glob("*.yaml"):
        f.unlink()

    def rendered(*args: str) -> list[dict[str, Any]]:
        out = helm("template", RELEASE, str(chart), *args).stdout
        return [o for o in objects(out) if o["apiVersion"].startswith("admissionregistration.k8s.io")]

    assert rendered() == [], "no files, no admission objects"
    (admission / "test.yaml").write_text("# a comment\n" + yaml.safe_dump(policy))
    assert rendered() == [policy]
    assert rendered("--set", "admissionPolicies.enabled=false") == []
    shutil.rmtree(admission)
    assert rendered() == [], "no folder, no admission objects"


GATEWAY = f"{FULLNAME}-gateway"
GATEWAY_VALUES = ["--set", "gateway.enabled=true", "--set", "gateway.database.existingSecret=gw-db",
                  "--set", "gateway.redis.existingSecret=gw-redis", "--set-json",
                  'gateway.prices={"my-model": {"input": 1.5, "output": 6}}']


def test_the_chart_runs_the_gateway_with_the_tested_rbac_and_sends_goal_pods_to_it() -> None:
    out = {(o["kind"], o["metadata"]["name"]): o
           for o in objects(helm("template", RELEASE, str(CHART), "-n", "ovs-system", *GATEWAY_VALUES).stdout)}
    tested_rbac = {o["kind"]: o for o in yaml.safe_load_all((harness.REPO / "e2e" / "gateway-rbac.yaml").read_text())}
    assert out[("ClusterRole", GATEWAY)]["rules"] == tested_rbac["ClusterRole"]["rules"]
    assert out[("ClusterRoleBinding", GATEWAY)]["subjects"] == [
        {"kind": "ServiceAccount", "name": GATEWAY, "namespace": "ovs-system"}]

    dep = out[("Deployment", GATEWAY)]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert dep["spec"]["replicas"] == 2 and container["command"] == ["overseer-gateway"]
    assert pod["serviceAccountName"] == GATEWAY
    env = {e["name"]: e for e in container["env"]}
    # connection strings only by Secret name: nothing in the chart's output holds them
    assert env["OVERSEER_GATEWAY_DATABASE_URL"] == {"name": "OVERSEER_GATEWAY_DATABASE_URL", "valueFrom": {
        "secretKeyRef": {"name": "gw-db", "key": "url"}}}
    assert env["OVERSEER_GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gw-redis", "key": "url"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    prices = yaml.safe_load(out[("ConfigMap", f"{GATEWAY}-prices")]["data"]["prices.yaml"])
    assert prices == {"my-model": {"input": 1.5, "output": 6}}
    assert env["OVERSEER_GATEWAY_PRICES_FILE"]["value"] == "/etc/overseer-gateway/prices.yaml"
    assert out[("PodDisruptionBudget", GATEWAY)]["spec"]["minAvailable"] == 1
    service = out[("Service", GATEWAY)]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "metrics": 9102}
    # the agents' NetworkPolicy finds the gateway's pods by gateway.podLabels
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "overseer-gateway"

    policy = out[("NetworkPolicy", GATEWAY)]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]})
    assert egress_ports == [53, 443, 5432, 6379, 6443], "model endpoint, API server, PostgreSQL, Redis, DNS only"
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchExpressions"] == [
        {"key": "overseer.dev/goal", "operator": "Exists"}], "the API port is open to goal pods only"

    operator_env = {e["name"]: e.get("value") for e in
                    out[("Deployment", OPERATOR)]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert operator_env["OVERSEER_GATEWAY_URL"] == f"http://{GATEWAY}.ovs-system.svc:8080"


def test_the_gateway_gets_the_platforms_namespace_budgets_and_rate_limits_and_the_operator_its_prices() -> None:
    out = {(o["kind"], o["metadata"]["name"]): o for o in objects(helm(
        "template", RELEASE, str(CHART), "-n", "ovs-system", *GATEWAY_VALUES, "--set-json",
        'gateway.namespaceBudgets={"default": {"maxCostPerDay": 50}, "namespaces": {"team-a": {"maxTokensPerDay": 1000}}}',
        "--set", "gateway.rateLimits.agentRequestsPerMinute=60").stdout)}
    pod = out[("Deployment", GATEWAY)]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    # in the operator's namespace, where namespace editors cannot write
    budgets = out[("ConfigMap", f"{GATEWAY}-budgets")]
    assert budgets["metadata"]["namespace"] == "ovs-system"
    assert yaml.safe_load(budgets["data"]["budgets.yaml"]) == {"default": {"maxCostPerDay": 50},
                                                               "namespaces": {"team-a": {"maxTokensPerDay": 1000}}}
    assert env["OVERSEER_GATEWAY_BUDGETS_FILE"] == "/etc/overseer-gateway/budgets.yaml"
    [volume] = [v for v in pod["volumes"] if v["name"] == "prices"]
    assert [s["configMap"]["name"] for s in volume["projected"]["sources"]] == [f"{GATEWAY}-prices", f"{GATEWAY}-budgets"]
    assert (env["OVERSEER_GATEWAY_AGENT_REQUESTS_PER_MINUTE"], env["OVERSEER_GATEWAY_REQUESTS_PER_MINUTE"]) == ("60", "0")
    assert env["OVERSEER_GATEWAY_RATE_LIMIT_REPLICAS"] == "2"  # each replica's share while Redis is down

    operator = out[("Deployment", OPERATOR)]["spec"]["template"]["spec"]
    operator_env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert operator_env["OVERSEER_GATEWAY_PRICES_FILE"] == "/etc/overseer-gateway/prices.yaml"  # for PriceKnown
    [mount] = [m for m in operator["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/overseer-gateway"]
    [prices] = [v for v in operator["volumes"] if v["name"] == mount["name"]]
    assert prices["configMap"]["name"] == f"{GATEWAY}-prices"

    refused = helm("template", RELEASE, str(CHART), *GATEWAY_VALUES, "--set-json",
                   'gateway.namespaceBudgets={"namespaces": {"team-a": {"maxCost": 5}}}', check=False)
    assert refused.returncode != 0 and "maxCost" in refused.stderr  # the values schema names the field


def test_without_the_gateway_nothing_of_it_is_rendered_and_enabled_it_needs_its_ledger() -> None:
    plain = objects(helm("template", RELEASE, str(CHART)).stdout)
    assert not [o for o in plain if o["metadata"]["name"].startswith(GATEWAY)]
    operator = next(o for o in plain if (o["kind"], o["metadata"]["name"]) == ("Deployment", OPERATOR))
    assert "OVERSEER_GATEWAY_URL" not in {e["name"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}

    refused = helm("template", RELEASE, str(CHART), "--set", "gateway.enabled=true", check=False)
    assert refused.returncode != 0 and "gateway.database.existingSecret" in refused.stderr, refused.stderr


def test_in_namespaced_mode_the_gateway_reviews_tokens_cluster_wide_and_reads_only_watched_namespaces() -> None:
    out = objects(helm("template", RELEASE, str(CHART), "-n", "ovs-system", *GATEWAY_VALUES,
                       "--set", "rbac.mode=namespaced", "--set", "watchNamespaces={team-a,team-b}").stdout)
    tested = next(o for o in yaml.safe_load_all((harness.REPO / "e2e" / "gateway-rbac.yaml").read_text())
                  if o["kind"] == "ClusterRole")["rules"]
    (cluster_role,) = [o for o in out if o["kind"] == "ClusterRole" and o["metadata"]["name"] == GATEWAY]
    assert cluster_role["rules"] == [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                                      "verbs": ["create"]}], "TokenReview is cluster-scoped; nothing else is"
    roles = {o["metadata"]["namespace"]: o["rules"] for o in out if o["kind"] == "Role"
             and o["metadata"]["name"] == GATEWAY}
    assert set(roles) == {"team-a", "team-b"}
    assert all(cluster_role["rules"] + rules == tested for rules in roles.values())
    bindings = {o["metadata"]["namespace"] for o in out if o["kind"] == "RoleBinding" and o["metadata"]["name"] == GATEWAY}
    assert bindings == {"team-a", "team-b"}


def test_goal_pods_reach_the_model_only_through_the_gateway_the_chart_runs(
        cluster: harness.Cluster, kubectl: harness.Kubectl, k8s: harness.K8s, kube_helm: Any, release_ns: str,
        namespace: str, tmp_path: Path, ledger_db: Any) -> None:
    kubectl("create", "secret", "generic", "gw-db", "-n", release_ns, f"--from-literal=url={ledger_db.dsn}")
    takeover = ["--force-conflicts"] if adopt_cluster_objects(kubectl, RELEASE, release_ns) else []
    kube_helm("install", RELEASE, str(CHART), "-n", release_ns, *FAST, *takeover, "--set", "gateway.enabled=true",
              "--set", "gateway.database.existingSecret=gw-db", "--wait", "--timeout", "120s")
    gateways = GatewayPods(cluster, k8s, release_ns, tmp_path, release=RELEASE).start()
    operators = OperatorPods(cluster, k8s, release_ns, tmp_path, release=RELEASE).start()
    model = ModelServer({"follow_history": True, "conversations": {f"{namespace}/hello": [
        {"reply": [{"tool_use": {"name": "write_file", "input": {"path": "hello.txt", "content": "done\n"}}}]},
        {"reply": [{"text": "Wrote hello.txt."}]}]}}, tmp_path)
    agents = None
    try:
        service = f"http://{GATEWAY}.{release_ns}.svc:8080"
        dns = gateways.service_urls(ready=2)
        assert service in dns, dns
        agents = AgentRunner(cluster, k8s, namespace, tmp_path, cluster_dns=dns).start()
        world = World(namespace, kubectl, None, lambda *a, **k: None)
        world.secret()  # api-key: test-key, which only the gateway may read
        world.apply(f"""
apiVersion: overseer.dev/v1alpha1
kind: Agent
metadata: {{name: coder}}
spec:
  role: Python engineer
  model: {{name: claude-sonnet-5-5, maxTokens: 4096, baseURL: "{model.url}",
           apiKeySecretRef: {{name: anthropic, key: api-key}}}}
""")
        world.wait_condition("agent", "coder", "Ready", "True", timeout=60)
        world.goal("hello")
        goal = world.wait_phase("hello", "Succeeded", timeout=180)
        pod = world.get("pod", "hello-a1")
        uid = goal["metadata"]["uid"]
        goal = wait_for(lambda: (g := world.get("goal", "hello"))["status"].get("cost") and g, timeout=30,
                        description="the gateway writing the goal's cost")
        with psycopg.connect(ledger_db.dsn) as conn:
            rows, usd = conn.execute("SELECT count(*), coalesce(sum(cost_usd), 0) FROM gateway_spend WHERE goal_uid = %s",
                                     (uid,)).fetchone()
        gateway_env = [proc_view(gateways.processes[p].proc.pid)[1] for p in gateways.running()]
        front = gateways.fronts[(GATEWAY, 8080)]
    finally:
        for thing in (agents, operators, gateways):
            if thing is not None:
                thing.stop()
        model.stop()

    # The goal pod holds no key and is sent to the chart's gateway Service ...
    agent = next(c for c in pod["spec"]["containers"] if c["name"] == "agent")
    env = {e["name"]: e for e in agent["env"]}
    assert env["ANTHROPIC_BASE_URL"]["value"] == service
    assert "test-key" not in json.dumps(pod) and '"anthropic"' not in json.dumps(pod)
    # ... whose pods read their ledger's URL from the Secret the chart names, as deployed ...
    assert len(gateway_env) == 2 and all(e["OVERSEER_GATEWAY_DATABASE_URL"] == ledger_db.dsn for e in gateway_env)
    assert sum(front.connections) >= 1
    # ... and every call the model answered came through it: with the Agent's key, a ledger row each,
    # the cost in the goal's status.
    calls = [r for r in model.requests() if r["conversation"] == f"{namespace}/hello"]
    assert len(calls) == 2 and {r["api_key"] for r in calls} == {"test-key"}
    assert rows == len(calls)
    assert goal["status"]["cost"]["requests"] == rows and goal["status"]["cost"]["usd"] == round(float(usd), 6) > 0
