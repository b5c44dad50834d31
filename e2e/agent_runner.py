"""The kubelet's part for goal pods under kwok: containers do not really run there, so this
runs the agent process locally for each Running goal pod, with that pod's environment, a token
of the pod's own ServiceAccount (so the agent has exactly its RBAC) and the loopback API URL;
when the process exits, it annotates the pod with the exit code and kwok reports the phase the
kubelet would. A pod deleted while its process runs gets the process killed.

A pod with a `tools` container gets that container as a second local process, as a cluster
would run it: only its own environment, no token or kubeconfig, and (when the harness runs as
root) another uid, so the agent process's /proc/<pid>/environ and its credential files are
unreadable to it, as another container's would be. The agent reaches it through the socket in a
folder that stands for the shared emptyDir.

Each goal keeps one workspace folder across attempts (as a PersistentVolume would), so a
replaced pod finds the files its predecessor wrote; with shared_workspace all goals of the
namespace work in one folder (as on one shared volume).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import EXIT_CODE_ANNOTATION, Cluster, K8s, service_account_kubeconfig

LABEL_GOAL = "overseer.dev/goal"
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


def _reachable_by_others(folder: Path) -> None:
    """Let other users pass through (not list) the folders above `folder`, as a volume's mount
    point is reachable from both containers."""
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


@dataclass
class AgentProcess:
    pod: str
    goal: str
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    tools: subprocess.Popen[bytes] | None = None  # the pod's tools container, if it has one

    def end_tools(self) -> None:
        if self.tools is not None and self.tools.poll() is None:
            self.tools.kill()
            self.tools.wait(timeout=10)


@dataclass
class AgentRunner:
    cluster: Cluster
    k8s: K8s
    namespace: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    shared_workspace: bool = False
    executable: Path | None = None  # overseer-agent of another install (default: this venv's)
    label_selector: str = LABEL_GOAL  # the pods this runner plays the kubelet for
    processes: dict[str, AgentProcess] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

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
                    p.proc.kill()
                    p.proc.wait(timeout=10)
                p.end_tools()

    def kill(self, pod: str) -> None:
        """SIGKILL the agent process of pod, as if its container crashed."""
        with self._lock:
            p = self.processes[pod]
            p.killed = True
            p.proc.send_signal(signal.SIGKILL)

    def log(self, pod: str) -> str:
        p = self.processes.get(pod)
        return p.log.read_text(errors="replace") if p and p.log.exists() else ""

    def workspace(self, goal: str) -> Path:
        path = self.workdir / "workspaces" / ("shared" if self.shared_workspace else goal)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- the kubelet's loop ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - keep playing the kubelet; tests see the logs
                print(f"agent runner: {e}", file=sys.stderr)
            self._stop.wait(0.2)

    def _tick(self) -> None:
        pods = self.k8s.core.list_namespaced_pod(self.namespace, label_selector=self.label_selector).items
        present = {p.metadata.name for p in pods}
        with self._lock:
            for name, p in list(self.processes.items()):
                code = p.proc.poll()
                if name not in present and code is None:
                    self._pod_gone(p)
                elif code is not None:
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
        p.proc.kill()  # the pod is gone: so are its containers
        p.end_tools()

    def _report_exit(self, pod: str, code: int) -> None:
        self.k8s.core.patch_namespaced_pod(pod, self.namespace,
                                           {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(code)}}})

    def _launch(self, pod: Any) -> None:
        name = pod.metadata.name
        goal = pod.metadata.labels[LABEL_GOAL]
        containers = {c.name: c for c in pod.spec.containers}
        container = containers.get("agent", pod.spec.containers[0])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERSEER_", "ANTHROPIC_", "KUBERNETES_"))}
        projected = self._projected_tokens(pod, container)
        tools = None
        if "tools" in containers:
            tools, socket_folders = self._launch_tools(pod, containers["tools"], goal)
            projected.update(socket_folders)
        for var in container.env or []:
            value = self._value(pod, var)
            if value is not None:
                env[var.name] = _local_path(value, projected)
        env["OVERSEER_WORKSPACE"] = str(self.workspace(goal))
        env["KUBECONFIG"] = str(self._kubeconfig(pod))
        env["OVERSEER_HEALTH_PORT"] = "0"  # pods have a port each; processes on one machine do not
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env.update(self.extra_env)
        log = self.workdir / f"agent-{name}.log"
        exe = self.executable or Path(sys.executable).parent / "overseer-agent"
        with open(log, "ab") as out:
            log.chmod(0o600)  # the agent container's output: not the tools container's to read
            # umask 0: what the agent's file tools create stays writable by the tools process's uid,
            # as files of one pod's uid are to both its containers.
            proc = subprocess.Popen([str(exe)], env=env, cwd=env["OVERSEER_WORKSPACE"], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, umask=0 if tools is not None else -1)
        with self._lock:
            self.processes[name] = AgentProcess(name, goal, proc, log, tools=tools)

    def _launch_tools(self, pod: Any, container: Any, goal: str) -> tuple[subprocess.Popen[bytes], dict[str, Path]]:
        """The tools container: its own env (nothing of the harness's but PATH and the locale), the
        workspace, and a local folder for each emptyDir it mounts besides (the socket's)."""
        folders: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            if mount.name != "workspace" and mount.mount_path != "/tmp":
                folder = self.workdir / f"volume-{pod.metadata.name}-{mount.name}"
                folder.mkdir(parents=True, exist_ok=True)
                folders[mount.mount_path] = folder
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        for var in container.env or []:
            value = self._value(pod, var)
            if value is not None:
                env[var.name] = _local_path(value, folders)
        workspace = self.workspace(goal)
        env["OVERSEER_WORKSPACE"] = str(workspace)
        exe = (self.executable or Path(sys.executable).parent / "overseer-agent").parent / "overseer-tools"
        proc = start_tools_process(exe, env, workspace, Path(env["OVERSEER_TOOLS_SOCKET"]),
                                   self.workdir / f"tools-{pod.metadata.name}.log")
        return proc, folders

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
