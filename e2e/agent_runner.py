"""The kubelet's part for goal pods under kwok: containers do not really run there, so this
runs the agent process locally for each Running goal pod, with that pod's environment, a token
of the pod's own ServiceAccount (so the agent has exactly its RBAC) and the loopback API URL;
when the process exits, it annotates the pod with the exit code and kwok reports the phase the
kubelet would. A pod deleted while its process runs gets the process killed.

Volumes are what the pod spec says, never a folder per goal: the runner also plays a hostPath
provisioner, giving each PersistentVolumeClaim of the namespace without a storageClassName a
PersistentVolume whose hostPath is a local folder named by the claim (the controller-manager
binds them; a claim naming a StorageClass stays Pending, as on a cluster without that class).
A claim's folder outlives its pods; an emptyDir is a fresh folder per pod and volume, deleted
when the pod is. Read-only mounts are not enforced: the process runs as the test's user.

A pod with a `tools` container gets that container as a second local process, as a cluster
would run it: only its own environment, no token or kubeconfig, and (when the harness runs as
root) another uid, so the agent process's /proc/<pid>/environ and its credential files are
unreadable to it, as another container's would be. The agent reaches it through the socket in a
folder that stands for the shared emptyDir.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import EXIT_CODE_ANNOTATION, Cluster, K8s, free_port, service_account_kubeconfig

LABEL_GOAL = "overseer.dev/goal"
LABEL_AGENT = "overseer.dev/agent"  # on every agent pod: a goal's, and an idle warm pod's
# emptyDir folders live under a short root: a Unix socket's path (at most 107 bytes) may be in one,
# as the tools container's is, and test folders are long.
EMPTY_DIRS = Path(tempfile.gettempdir()) / "overseer-emptydirs"
TOOLS_UID = 65532  # the image's non-root user; the harness's agent process runs as another (root)


def start_tools_process(exe: Path, env: dict[str, str], workspace: Path, socket: Path,
                        log: Path) -> subprocess.Popen[bytes]:
    """`overseer-tools` as a goal pod's tools container: env is all it gets; as root, it runs as
    TOOLS_UID with no supplementary groups. Returns once its socket answers."""
    socket.unlink(missing_ok=True)
    as_other_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        as_other_user = {"user": TOOLS_UID, "group": TOOLS_UID, "extra_groups": []}
        # The image's Python is where this one is: reachable by the image's user (a Python under
        # /root, as pyenv puts it, is not by default).
        _reachable_by_others(Path(sys.base_prefix) / "bin")
        _reachable_by_others(exe)  # an install under a test's 0700 temporary folder, too
        with open(exe, "rb") as script:
            if (first := script.readline()).startswith(b"#!"):
                _reachable_by_others(Path(first[2:].split()[0].decode()))  # its interpreter's links
        _reachable_by_others(workspace)
        workspace.chmod(0o777)
        os.chown(socket.parent, TOOLS_UID, TOOLS_UID)
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(exe), "--socket", str(socket), "--workspace", str(workspace)], env=env,
                                cwd=str(workspace), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                **as_other_user)
    deadline = time.monotonic() + 30
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"overseer-tools did not start; log:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return proc


def kill_container(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a container's process and every process it started, as a container's end kills all
    in its PID namespace: a command a tool started (in a session of its own) dies with it, and does
    not finish afterwards as an orphan no cluster would leave."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, i = [proc.pid], 0
    while i < len(tree):  # gathered before any is killed: an orphan loses its parent link
        tree.extend(children.get(tree[i], []))
        i += 1
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _reachable_by_others(folder: Path) -> None:
    """Let other users pass through (not list) the folders above `folder` and above each link on
    the way to it, as a volume's mount point and the image's files are reachable from both
    containers."""
    hops = [folder]
    while hops[-1].is_symlink():
        hops.append(hops[-1].parent / hops[-1].readlink())
    for parent in {parent for hop in hops for parent in hop.absolute().parents} | set(folder.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)




@dataclass
class AgentProcess:
    pod: str
    goal: str  # "" for a warm pod started before a goal claimed it (goal_of reads the label now)
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0  # of its /healthz and /metrics on loopback (0: none)
    empty_dirs: list[Path] = field(default_factory=list)
    killed: bool = False
    tools: subprocess.Popen[bytes] | None = None  # the pod's tools container, if it has one

    def end_tools(self) -> None:
        if self.tools is not None and self.tools.poll() is None:
            kill_container(self.tools)
            self.tools.wait(timeout=10)


@dataclass
class AgentRunner:
    cluster: Cluster
    k8s: K8s
    namespace: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    interval: float = 0.2  # seconds between looks at the pods
    executable: Path | None = None  # overseer-agent of another install (default: this venv's)
    label_selector: str = LABEL_AGENT  # the pods this runner plays the kubelet for
    # Cluster DNS and kube-proxy for the pods' environment: a Service's in-cluster URL
    # (http://NAME.NAMESPACE.svc:PORT) -> the loopback URL that reaches its pods (GatewayPods.service_urls)
    cluster_dns: dict[str, str] = field(default_factory=dict)
    processes: dict[str, AgentProcess] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    provisioned: set[str] = field(default_factory=set)  # claim uids given a PersistentVolume

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"agent-runner-{self.namespace}", daemon=True)

    # ---- control ------------------------------------------------------------------------

    def start(self) -> "AgentRunner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for p in self.processes.values():
                if p.proc.poll() is None:
                    kill_container(p.proc)
                    p.proc.wait(timeout=10)
                p.end_tools()
                for folder in p.empty_dirs:  # the pods go with the test's namespace
                    shutil.rmtree(folder, ignore_errors=True)

    def kill(self, pod: str) -> None:
        """SIGKILL the agent process of pod, as if its container crashed."""
        with self._lock:
            p = self.processes[pod]
            p.killed = True
            kill_container(p.proc)

    def log(self, pod: str) -> str:
        p = self.processes.get(pod)
        return p.log.read_text(errors="replace") if p and p.log.exists() else ""

    def process_of_goal(self, goal: str) -> AgentProcess | None:
        """The process working on goal: started for its pod, or for a warm pod the goal claimed."""
        pods = {p.metadata.name for p in self.k8s.core.list_namespaced_pod(
            self.namespace, label_selector=f"{LABEL_GOAL}={goal}").items}
        with self._lock:
            return next((p for p in self.processes.values() if p.goal == goal or p.pod in pods), None)

    def claim_folder(self, claim: str) -> Path:
        """The folder the PersistentVolume of claim stands for (it may be seeded before the claim exists)."""
        path = self.workdir / "volumes" / self.namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def empty_dir(self, pod_uid: str, volume: str) -> Path:
        return EMPTY_DIRS / pod_uid / volume

    # ---- the kubelet's loop ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - keep playing the kubelet; tests see the logs
                print(f"agent runner: {e}", file=sys.stderr)
            self._stop.wait(self.interval)

    def _tick(self) -> None:
        self._provision()
        pods = self.k8s.core.list_namespaced_pod(self.namespace, label_selector=self.label_selector).items
        present = {p.metadata.name for p in pods}
        with self._lock:
            for name, p in list(self.processes.items()):
                code = p.proc.poll()
                if name not in present:
                    self._pod_gone(p)
                if code is not None:
                    p.end_tools()
                    self.finished.setdefault(name, code if code >= 0 else 128 - code)
                    if name in present and name not in self.reported:
                        self._report_exit(name, self.finished[name])  # retried next tick if it fails
                        self.reported.add(name)
        for pod in pods:
            name = pod.metadata.name
            if pod.status.phase != "Running" or pod.metadata.deletion_timestamp or name in self.processes:
                continue
            if EXIT_CODE_ANNOTATION in (pod.metadata.annotations or {}):
                continue
            self._launch(pod)

    def _pod_gone(self, p: AgentProcess) -> None:
        if p.proc.poll() is None:
            kill_container(p.proc)  # the pod is gone: so is its container, and its emptyDir volumes
            p.proc.wait(timeout=10)
        p.end_tools()
        for folder in p.empty_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        p.empty_dirs.clear()

    def _provision(self) -> None:
        """A hostPath provisioner's part: a PersistentVolume for each pending claim of the default
        (unnamed) class, pre-bound to it; the controller-manager's binder completes the binding."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        for claim in self.k8s.core.list_namespaced_persistent_volume_claim(self.namespace).items:
            if claim.spec.volume_name or claim.spec.storage_class_name or claim.metadata.uid in self.provisioned:
                continue
            folder = self.claim_folder(claim.metadata.name)
            volume = client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(name=f"pvc-{claim.metadata.uid}"),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": claim.spec.resources.requests["storage"]},
                    access_modes=claim.spec.access_modes, storage_class_name="",
                    persistent_volume_reclaim_policy="Retain",
                    host_path=client.V1HostPathVolumeSource(path=str(folder), type="Directory"),
                    claim_ref=client.V1ObjectReference(namespace=self.namespace, name=claim.metadata.name,
                                                       uid=claim.metadata.uid)))
            try:
                self.k8s.core.create_persistent_volume(volume)
            except ApiException as e:
                if e.status != 409:
                    raise
            self.provisioned.add(claim.metadata.uid)

    def _report_exit(self, pod: str, code: int) -> None:
        self.k8s.core.patch_namespaced_pod(pod, self.namespace,
                                           {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(code)}}})

    def _launch(self, pod: Any) -> None:
        name = pod.metadata.name
        goal = pod.metadata.labels.get(LABEL_GOAL, "")
        containers = {c.name: c for c in pod.spec.containers}
        container = containers.get("agent", pod.spec.containers[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERSEER_", "ANTHROPIC_", "KUBERNETES_"))}
        folders = {**self._projected_tokens(pod, container), **self._volumes(pod, container)}
        tools = self._launch_tools(pod, containers["tools"]) if "tools" in containers else None
        for var in container.env or []:
            value = self._value(pod, var)
            if value is not None:
                env[var.name] = _resolve(_local_path(value, folders), self.cluster_dns)
        env["KUBECONFIG"] = str(self._kubeconfig(pod))
        port = free_port()  # pods have the same port each; processes on one machine need their own
        env["OVERSEER_HEALTH_PORT"] = str(port)
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.update(self.extra_env)
        log = self.workdir / f"agent-{name}.log"
        exe = self.executable or Path(sys.executable).parent / "overseer-agent"
        with open(log, "ab") as out:
            log.chmod(0o600)  # the agent container's output: not the tools container's to read
            # umask 0: what the agent's file tools create stays writable by the tools process's uid,
            # as files of one pod's uid are to both its containers.
            proc = subprocess.Popen([str(exe)], env=env, cwd=_local_path(container.working_dir or "/", folders),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    umask=0 if tools is not None else -1)
        empty = [folder for folder in folders.values() if folder.is_relative_to(EMPTY_DIRS)]
        with self._lock:
            self.processes[name] = AgentProcess(name, goal, proc, log, port, empty, tools=tools)

    def _launch_tools(self, pod: Any, container: Any) -> subprocess.Popen[bytes]:
        """The tools container: its own env (nothing of the harness's but PATH and the locale) and
        its own mounts (the workspace, the socket's emptyDir shared with the agent container)."""
        folders = self._volumes(pod, container)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        for var in container.env or []:
            value = self._value(pod, var)
            if value is not None:
                env[var.name] = _local_path(value, folders)
        exe = (self.executable or Path(sys.executable).parent / "overseer-agent").parent / "overseer-tools"
        return start_tools_process(exe, env, Path(env["OVERSEER_WORKSPACE"]), Path(env["OVERSEER_TOOLS_SOCKET"]),
                                   self.workdir / f"tools-{pod.metadata.name}.log")

    def _value(self, pod: Any, var: Any) -> str | None:
        """What the kubelet would set the variable to; None where it leaves it out (an optional
        secretKeyRef whose Secret or key is missing)."""
        if var.value is not None:
            return var.value
        source = var.value_from
        if source.field_ref is not None:
            return {"metadata.namespace": pod.metadata.namespace, "metadata.name": pod.metadata.name,
                    "metadata.uid": pod.metadata.uid}[source.field_ref.field_path]
        if source.secret_key_ref is not None:
            import base64

            from kubernetes.client.exceptions import ApiException

            ref = source.secret_key_ref
            try:
                data = self.k8s.core.read_namespaced_secret(ref.name, pod.metadata.namespace).data or {}
            except ApiException as exc:
                if exc.status == 404 and ref.optional:
                    return None
                raise
            if ref.key not in data and ref.optional:
                return None
            return base64.b64decode(data[ref.key]).decode()
        raise ValueError(f"unsupported env source for {var.name}")

    def _token(self, pod: Any, audiences: list[str], seconds: int = 3600) -> str:
        """A token of the pod's ServiceAccount bound to the pod: it stops working when the pod is deleted."""
        from kubernetes import client

        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=audiences, expiration_seconds=seconds,
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod.metadata.name,
                                                           uid=pod.metadata.uid)))
        return self.k8s.core.create_namespaced_service_account_token(
            pod.spec.service_account_name, pod.metadata.namespace, request).status.token

    def _volumes(self, pod: Any, container: Any) -> dict[str, Path]:
        """The local folder of each mounted emptyDir (fresh for this pod) and claim (the hostPath of
        its bound PersistentVolume, as the kubelet would mount it)."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        folders: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None:
                continue
            if volume.empty_dir is not None:
                folder = self.empty_dir(pod.metadata.uid, volume.name)
                folder.mkdir(parents=True, exist_ok=True)
            elif volume.persistent_volume_claim is not None:
                claim = self.k8s.core.read_namespaced_persistent_volume_claim(
                    volume.persistent_volume_claim.claim_name, pod.metadata.namespace)
                bound = self.k8s.core.read_persistent_volume(claim.spec.volume_name)
                folder = Path(bound.spec.host_path.path)
            else:
                continue
            folders[mount.mount_path] = folder / (mount.sub_path or "")
        return folders

    def _projected_tokens(self, pod: Any, container: Any) -> dict[str, Path]:
        """What the kubelet projects into the container: each serviceAccountToken source with an
        audience of a mounted projected volume (the API server's own token comes with the kubeconfig),
        minted for this pod, in a local folder per mount path."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        folders: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            sources = [s.service_account_token for s in (volume.projected.sources or [])
                       if s.service_account_token is not None and s.service_account_token.audience] \
                if volume is not None and volume.projected is not None else []
            if not sources:
                continue
            folder = self.workdir / f"projected-{pod.metadata.name}-{mount.name}"
            folder.mkdir(parents=True, exist_ok=True)
            for token in sources:
                file = folder / token.path
                file.write_text(self._token(pod, [token.audience], token.expiration_seconds or 3600))
                file.chmod(0o600)
            folders[mount.mount_path] = folder
        return folders

    def _kubeconfig(self, pod: Any) -> Path:
        """A kubeconfig with a token of the pod's ServiceAccount, bound to the pod (it stops working
        when the pod is deleted), for the loopback API URL."""
        path = service_account_kubeconfig(self.k8s, self.cluster, pod.metadata.namespace,
                                          pod.spec.service_account_name, self.workdir / f"kubeconfig-{pod.metadata.name}",
                                          pod=pod)
        path.chmod(0o600)  # the agent's own, as a token in its container is
        return path


def _local_path(value: str, folders: dict[str, Path]) -> str:
    """A path inside a mounted volume, as the local folder that stands for that mount."""
    for mount_path, folder in folders.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + value[len(mount_path.rstrip("/")):]
    return value


def _resolve(value: str, cluster_dns: dict[str, str]) -> str:
    """A URL naming a Service the harness routes, as the loopback URL that reaches its pods."""
    for url, local in cluster_dns.items():
        if value == url or value.startswith(url + "/"):
            return local + value[len(url):]
    return value


def wait_exit(runner: AgentRunner, pod: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pod in runner.finished:
            return runner.finished[pod]
        time.sleep(0.1)
    raise AssertionError(f"agent process of pod {pod} did not exit within {timeout}s; log:\n{runner.log(pod)[-3000:]}")


class ModelServer:
    """`overseer-scripted-model` as a subprocess: a stand-in for the Messages API."""

    def __init__(self, scenario: dict[str, Any], workdir: Path) -> None:
        path = workdir / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario))
        exe = Path(sys.executable).parent / "overseer-scripted-model"
        self.log = workdir / "model.log"
        self.proc = subprocess.Popen([str(exe), "--scenario", str(path), "--port", "0", "--log-requests",
                                      str(workdir / "requests.jsonl")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"scripted model did not start: {line}"
        self.url = match.group(1)
        self.requests_path = workdir / "requests.jsonl"

    def requests(self) -> list[dict[str, Any]]:
        if not self.requests_path.exists():
            return []
        return [json.loads(line) for line in self.requests_path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
