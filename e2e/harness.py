"""Helpers for end-to-end tests against the local control plane (e2e/cluster/up.sh).

The fixtures in e2e/conftest.py are thin wrappers around what is here, so scripts (such as
the demo) can use the same helpers without pytest.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO / "e2e" / "cluster"
CRDS_DIR = REPO / "crds"
ADMISSION_DIR = REPO / "charts" / "overseer" / "files" / "admission"
EXIT_CODE_ANNOTATION = "overseer.dev/exit-code"
LOOPBACK_NO_PROXY = "127.0.0.1,localhost"

T = TypeVar("T")


def cache_dir() -> Path:
    return Path(os.environ.get("OVERSEER_CACHE") or REPO / ".cache")


def control_plane_dir() -> Path:
    return cache_dir() / "control-plane"


def _no_proxy_env(env: dict[str, str]) -> dict[str, str]:
    """Never send loopback traffic through an HTTP proxy configured in the environment."""
    for key in ("NO_PROXY", "no_proxy"):
        current = env.get(key, "")
        env[key] = f"{current},{LOOPBACK_NO_PROXY}" if current else LOOPBACK_NO_PROXY
    return env


# --------------------------------------------------------------------------------------------
# waiting


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30,
    interval: float = 0.2,
    description: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    An exception raised by the predicate counts as "not yet" and is remembered. On timeout an
    AssertionError names ``description`` and the last value (or exception) seen.
    """
    what = description or getattr(predicate, "__name__", repr(predicate))
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last, last_exc = None, exc
        if last:
            return last
        if time.monotonic() >= deadline:
            seen = f"{type(last_exc).__name__}: {last_exc}" if last_exc else repr(last)
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last seen: {seen}"
            ) from last_exc
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# cluster


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    api_url: str
    run_dir: Path
    started_here: bool

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a process that talks to this cluster."""
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        env.update(extra)
        return _no_proxy_env(env)


ALREADY_RUNNING_MARKERS = ("control plane already running", "kind cluster 'overseer' already running")


def start_cluster(timeout: float = 300) -> Cluster:
    """Run up.sh (idempotent) and describe the cluster; requires the built binaries."""
    cp = control_plane_dir()
    bin_dir = cp / "bin"
    if not (bin_dir / ".stamp").is_file():
        raise RuntimeError(
            f"control plane binaries not built ({bin_dir}/.stamp missing): run make cluster-build"
        )
    proc = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_no_proxy_env(dict(os.environ)),
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"e2e/cluster/up.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    started_here = not any(m in proc.stdout for m in ALREADY_RUNNING_MARKERS)
    run_dir = cp / "run"
    kubeconfig = run_dir / "admin.kubeconfig"
    config = yaml.safe_load(kubeconfig.read_text())
    api_url = config["clusters"][0]["cluster"]["server"]
    return Cluster(kubeconfig, bin_dir, api_url, run_dir, started_here)


def stop_cluster() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLUSTER_DIR / "down.sh")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------------------------
# kubectl and the python client


class Kubectl:
    """``kubectl(*args, input=None, check=True, timeout=60)`` with the built kubectl."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def __call__(
        self,
        *args: str,
        input: str | None = None,  # named as subprocess.run names it
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.cluster.kubectl_path), "--kubeconfig", str(self.cluster.kubeconfig), *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.cluster.env(),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed with exit code {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        return proc


class K8s:
    """The official client's ApiClient for the cluster, with the APIs the tests use."""

    def __init__(self, cluster: Cluster):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg,
                                persist_config=False)
        # the API server is on 127.0.0.1: never go through a proxy taken from the environment
        cfg.no_proxy = ",".join(filter(None, [cfg.no_proxy, LOOPBACK_NO_PROXY]))
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.apiextensions = client.ApiextensionsV1Api(self.api_client)

    # alternative spellings, for readability at the call site
    @property
    def CoreV1Api(self):
        return self.core

    @property
    def CustomObjectsApi(self):
        return self.custom

    @property
    def RbacAuthorizationV1Api(self):
        return self.rbac

    @property
    def NetworkingV1Api(self):
        return self.networking

    def close(self) -> None:
        self.api_client.close()


# --------------------------------------------------------------------------------------------
# CRDs, namespaces, pods


def crd_files(crds_dir: Path = CRDS_DIR) -> list[Path]:
    if not crds_dir.is_dir():
        return []
    return sorted(p for p in crds_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def install_crds(kubectl: Kubectl, crds_dir: Path = CRDS_DIR, timeout: float = 60) -> list[str]:
    """Server-side apply every CRD in ``crds_dir``; wait until each is Established and served.

    Returns the CRD names (``plural.group``).
    """
    out = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds_dir), "-o", "name")
    names = [line.split("/", 1)[1] for line in out.stdout.split() if line.startswith("customresourcedefinition")]
    if names:
        kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                *[f"crd/{n}" for n in names], timeout=timeout + 10)
        for name in names:  # the discovery of the new resource can lag behind Established
            wait_for(
                lambda: kubectl("get", name, "--all-namespaces", "-o", "name", check=False).returncode == 0,
                timeout=timeout,
                description=f"resource {name} to be served",
            )
    return names


def install_admission_policies(kubectl: Kubectl, admission_dir: Path = ADMISSION_DIR, timeout: float = 60) -> list[str]:
    """Server-side apply the shipped admission policies; wait until the API server has compiled
    each validating policy for the current generation. Returns their names (kind/name)."""
    out = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(admission_dir), "-o", "name")
    names = out.stdout.split()

    def compiled() -> bool:
        items = yaml.safe_load(kubectl("get", "validatingadmissionpolicies", "-o", "yaml").stdout)["items"]
        ours = [p for p in items if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") == "overseer"]
        return bool(ours) and all((p.get("status") or {}).get("observedGeneration") == p["metadata"]["generation"]
                                  for p in ours)
    wait_for(compiled, timeout=timeout, description="the admission policies to be compiled")
    wait_for(lambda: policies_configured(kubectl), timeout=240,
             description="the API server to resolve the policies' paramKind (Agent)")
    return names


PROBE_GOAL = """
apiVersion: overseer.dev/v1alpha1
kind: Goal
metadata: {name: admission-probe, namespace: default}
spec: {description: probe, agentRef: {name: probe}}
"""


def policies_configured(kubectl: Kubectl) -> bool:
    """Whether a Goal create gets past the policies' configuration. A policy whose paramKind is a
    CRD the API server's REST mapper has not discovered yet fails closed ("failed to configure
    policy") until the mapper's next reset and the policy controller's retry, up to about two
    minutes after CRDs and policies are installed together (docs/security.md)."""
    out = kubectl("create", "--dry-run=server", "-f", "-", input=PROBE_GOAL, check=False)
    if out.returncode != 0 and "failed to configure policy" not in out.stderr:
        raise AssertionError(f"the probe Goal was refused for another reason: {out.stderr}")
    return out.returncode == 0


def service_account_kubeconfig(k8s: "K8s", cluster: "Cluster", namespace: str, account: str, path: Path,
                               pod: Any = None, seconds: int = 3600) -> Path:
    """A kubeconfig holding only a TokenRequest token of ServiceAccount namespace/account (bound
    to `pod` when given, as a pod's projected token is), for the loopback API URL: the API server
    sees exactly that account, with its RBAC and no client certificate."""
    from kubernetes import client

    bound = client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod.metadata.name,
                                          uid=pod.metadata.uid) if pod is not None else None
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=[], expiration_seconds=seconds, bound_object_ref=bound))
    token = k8s.core.create_namespaced_service_account_token(account, namespace, request).status.token
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": account,
        "clusters": [{"name": "local", "cluster": {"server": cluster.api_url,
                                                   "certificate-authority": str(cluster.run_dir / "pki" / "ca.crt")}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}],
    }))
    return path


def dns_name(text: str, prefix: str = "e2e-", suffix_len: int = 5, max_len: int = 63) -> str:
    """A unique DNS-1123 label derived from ``text`` (e.g. a test name)."""
    suffix = secrets.token_hex(8)[:suffix_len]
    body = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    room = max_len - len(prefix) - len(suffix) - 1
    body = body[:room].strip("-") or "x"
    return f"{prefix}{body}-{suffix}"


def create_namespace(k8s: K8s, name: str, labels: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Create a namespace enforcing the ``restricted`` Pod Security level and wait until its
    ``default`` ServiceAccount exists (pods are rejected before that)."""
    from kubernetes import client

    all_labels = {"pod-security.kubernetes.io/enforce": "restricted", **(labels or {})}
    k8s.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=all_labels)))
    wait_for(
        lambda: k8s.core.read_namespaced_service_account("default", name),
        timeout=timeout,
        description=f"ServiceAccount {name}/default",
    )
    return name


def delete_namespace(k8s: K8s, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        k8s.core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def restricted_pod(name: str, image: str = "registry.invalid/overseer/none:1", **spec: Any) -> dict[str, Any]:
    """A pod manifest that passes the ``restricted`` Pod Security level (never pulled under kwok)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            **spec,
        },
    }


def pod_phase(k8s: K8s, namespace: str, name: str) -> str | None:
    return k8s.core.read_namespaced_pod(name, namespace).status.phase


def exit_pod(k8s: K8s, namespace: str, pod_name: str, code: int, timeout: float = 30) -> None:
    """Report that the pod's container exited with ``code``, as a kubelet would.

    Waits for the pod to be Running (kwok's exit stages only match Running pods), then
    annotates it ``overseer.dev/exit-code=<code>``; kwok then moves it to Succeeded (0) or
    Failed (anything else, with that exit code in containerStatuses).
    """
    wait_for(
        lambda: pod_phase(k8s, namespace, pod_name) == "Running",
        timeout=timeout,
        description=f"pod {namespace}/{pod_name} to be Running",
    )
    k8s.core.patch_namespaced_pod(
        pod_name, namespace, {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(int(code))}}}
    )


def token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with ``token`` only (what a pod's ServiceAccount gives)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "token",
        "clusters": [{"name": "local", "cluster": {"server": cluster.api_url,
                                                   "certificate-authority": str(cluster.run_dir / "pki" / "ca.crt")}}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "local", "user": "token"}}],
    }))
    return path


# --------------------------------------------------------------------------------------------
# the operator as a process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def operator_executable() -> Path:
    return Path(sys.executable).parent / "overseer-operator"


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    return http_get(url, timeout)[0] == 200


def http_get(url: str, timeout: float = 1.0) -> tuple[int | None, str]:
    """(status, body) of a GET; (None, why) when nothing answers."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class OperatorProcess:
    """``overseer-operator --namespace NS --health-port PORT`` as a subprocess; started once its
    /healthz answers 200 (readiness, /readyz, comes later: see ``probe``)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_path: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30,
        executable: Path | None = None,
    ):
        self.cluster = cluster
        self.executable = executable or operator_executable()
        self.namespace = namespace
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "OperatorProcess":
        exe = self.executable
        if not exe.exists():
            raise AssertionError(f"{exe} not found: install the project into this venv (make venv)")
        self.health_port = free_port()
        cmd = [str(exe), "--namespace", self.namespace, "--health-port", str(self.health_port),
               *self.extra_args]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"===== start {self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.cluster.env(PYTHONUNBUFFERED="1", **self.extra_env),
                cwd=str(REPO),
            )
        deadline = time.monotonic() + self.startup_timeout
        while not http_ok(self.health_url("/healthz")):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"overseer-operator exited with {self.proc.returncode} during startup; log tail:\n"
                    f"{tail(self.log_text())}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"overseer-operator {self.health_url('/healthz')} did not answer 200 within "
                    f"{self.startup_timeout:g}s; log tail:\n{tail(self.log_text())}"
                )
            time.sleep(0.2)
        return self

    def health_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def probe(self, path: str) -> tuple[int | None, str]:
        """(status, reason) of /healthz or /readyz."""
        status, body = http_get(self.health_url(path), timeout=5)
        return status, body.strip()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL: the operator dies without any cleanup (crash tests)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def restart(self) -> "OperatorProcess":
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"OperatorProcess(namespace={self.namespace!r}, pid={self.pid}, log={str(self.log_path)!r})"
