"""`overseer-gateway` as a subprocess on the local control plane, running as its own
ServiceAccount with the least privilege it needs (e2e/gateway-rbac.yaml, what the chart grants),
pod-bound tokens minted the way the kubelet projects them into goal pods, and the gateway's
Service in front of several replicas as kube-proxy makes it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import Cluster, K8s, Kubectl, free_port, http_ok, tail

from overseer.api.gateway import AUDIENCE

RBAC = Path(__file__).resolve().parent / "gateway-rbac.yaml"
NAMESPACE = "overseer-system"
SERVICE_ACCOUNT = "overseer-gateway"


def pod_token(k8s: K8s, namespace: str, pod: str, audience: str = AUDIENCE, seconds: int = 600) -> str:
    """A token of the pod's ServiceAccount bound to the pod, as a projected volume would hold it."""
    from kubernetes import client

    obj = k8s.core.read_namespaced_pod(pod, namespace)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=[audience] if audience else [], expiration_seconds=seconds,
        bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod,
                                                       uid=obj.metadata.uid)))
    return k8s.core.create_namespaced_service_account_token(
        obj.spec.service_account_name, namespace, request).status.token


def gateway_kubeconfig(cluster: Cluster, kubectl: Kubectl, k8s: K8s, path: Path) -> Path:
    """Install the gateway's ServiceAccount and RBAC; a kubeconfig with a token of that account."""
    from kubernetes import client

    kubectl("apply", "-f", str(RBAC))
    token = k8s.core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, NAMESPACE, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=24 * 3600))).status.token
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gateway",
        "clusters": [{"name": "local", "cluster": {"server": cluster.api_url,
                                                   "certificate-authority": str(cluster.run_dir / "pki" / "ca.crt")}}],
        "users": [{"name": "gateway", "user": {"token": token}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "local", "user": "gateway"}}],
    }))
    return path


class GatewayProcess:
    """The gateway on a free loopback port; `.url` for clients, `.metrics_url` for Prometheus,
    `.stop()` when done."""

    def __init__(self, cluster: Cluster, kubeconfig: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.log = log
        exe = Path(sys.executable).parent / "overseer-gateway"
        environment = cluster.env(KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1",
                                  OVERSEER_GATEWAY_HOST="127.0.0.1", OVERSEER_GATEWAY_PORT=str(self.port),
                                  OVERSEER_GATEWAY_METRICS_PORT=str(metrics_port),
                                  **(env or {}))
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([str(exe)], env=environment, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60  # a loaded machine takes its time to import the gateway
        while not http_ok(f"{self.url}/healthz"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"overseer-gateway did not start; log:\n{tail(self.log_text())}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Service:
    """The gateway's Service on loopback, as kube-proxy makes it: each new connection goes to the
    next ready backend in turn and its bytes pass through untouched, so a client keeps the replica
    its connection landed on. A backend whose process is gone refuses the connection; that client's
    connection is reset, as one to a dead pod is, and the backend leaves the rotation, as an
    endpoint that fails its readiness probe does: the client's retry opens a new connection, to
    another replica. When a replica dies, its open connections close as its sockets do.

    `.connections[i]` counts the connections backend i took; `.in_flight[i]` the requests sent to
    it that have no answer byte yet; `.broken[i]` the requests whose connection it closed unanswered."""

    def __init__(self, backends: list[str]) -> None:
        self._backends: list[list[str]] = []
        self.ready: list[int] = []
        self.connections: list[int] = []
        self.in_flight: list[int] = []
        self.broken: list[int] = []
        self.set_backends(backends)
        self._turn = 0
        self._open: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="service", daemon=True).start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def set_backends(self, backends: list[str]) -> None:
        """The ready endpoints now, as the endpoints controller sees them: a new one joins the
        rotation, one no longer listed leaves it (connections it holds stay until they close)."""
        wanted = [url.removeprefix("http://").rsplit(":", 1) for url in backends]
        for backend in wanted:
            if backend not in self._backends:
                self._backends.append(backend)
                for counts in (self.connections, self.in_flight, self.broken):
                    counts.append(0)
        self.ready = [i for i, backend in enumerate(self._backends) if backend in wanted]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = sides = [writer]
        task.add_done_callback(self._open.pop)
        while self.ready:
            i = self.ready[self._turn % len(self.ready)]
            self._turn += 1
            host, port = self._backends[i]
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                sides.append(up_writer)
                break
            except OSError:
                if i in self.ready:
                    self.ready.remove(i)
                writer.transport.abort()
                return
        else:
            writer.transport.abort()
            return
        self.connections[i] += 1
        waiting = [False]  # a request went out and no byte of its answer came back yet

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, request: bool) -> None:
            try:
                while data := await src.read(65536):
                    if request != waiting[0]:
                        waiting[0] = request
                        self.in_flight[i] += 1 if request else -1
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except OSError:
                dst.transport.abort()
            finally:
                if waiting[0] and not request:  # the backend went away with a request unanswered
                    waiting[0] = False
                    self.in_flight[i] -= 1
                    self.broken[i] += 1

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            writer.close()
            up_writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for sides in self._open.values():  # connections clients still keep alive
                for side in sides:
                    side.transport.abort()
            await asyncio.gather(*self._open, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
