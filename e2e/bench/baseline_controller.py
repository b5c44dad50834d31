"""The floor for the dispatch benchmark: a framework-free controller for Goals.

One watch on the Goals of a namespace (raw HTTP, newline-delimited JSON) feeds a queue; a pool
of threads, each with its own keep-alive connection, takes every new Goal, creates its pod (the
manifest Overseer renders: `overseer.operator.pods.render_pod` on the parsed models) and patches
the Goal's status once (phase Running, agent, pod, attempt). Those are the writes a dispatch
needs and nothing else: no dependencies, queueing, retries, events or conditions, no pod watch.

    python -m e2e.bench.baseline_controller --namespace NS [--workers 16] [--stats FILE]

It prints `ready` once its watch is open, and on SIGTERM writes the writes it made (by verb and
resource) to --stats as JSON. The raw client below is also the benchmark's own client.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import queue
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import yaml

GOALS = "/apis/overseer.dev/v1alpha1/namespaces/{ns}/goals"
AGENTS = "/apis/overseer.dev/v1alpha1/namespaces/{ns}/agents"
PODS = "/api/v1/namespaces/{ns}/pods"


# ---- a raw HTTP client: one keep-alive connection per thread ------------------------------

def _pem_file(data: str) -> str:
    f = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".pem", delete=False)
    f.write(base64.b64decode(data))
    f.close()
    return f.name


class ApiError(Exception):
    def __init__(self, status: int, method: str, url: str, body: bytes) -> None:
        super().__init__(f"{method} {url}: {status} {body[:300].decode(errors='replace')}")
        self.status = status


class Api:
    """Plain-dict REST calls to the API server; thread-safe (a connection per thread)."""

    def __init__(self, server: str, ctx: ssl.SSLContext, token: str | None = None) -> None:
        url = urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ctx = ctx
        self.headers = {"Accept": "application/json", "User-Agent": "bench"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None) -> "Api":
        """The current context of a kubeconfig (file paths or inline data; certificates or a token)."""
        path = path or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"
        cfg = yaml.safe_load(Path(path).read_text())
        ctx_name = cfg.get("current-context") or cfg["contexts"][0]["name"]
        context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
        user = next((u["user"] for u in cfg.get("users") or [] if u["name"] == context.get("user")), {})
        ca = cluster.get("certificate-authority") or (
            _pem_file(cluster["certificate-authority-data"]) if cluster.get("certificate-authority-data") else None)
        ctx = ssl.create_default_context(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        cert = user.get("client-certificate") or (
            _pem_file(user["client-certificate-data"]) if user.get("client-certificate-data") else None)
        key = user.get("client-key") or (_pem_file(user["client-key-data"]) if user.get("client-key-data") else None)
        if cert:
            ctx.load_cert_chain(cert, key)
        return cls(cluster["server"], ctx, user.get("token"))

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self._local.conn = conn
        return conn

    def request(self, method: str, url: str, body: Any = None,
                content_type: str = "application/json", decode: bool = True) -> Any:
        """Send one request and return the decoded answer (the bytes if not decode); raise
        ApiError on a non-2xx status."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status >= 300:
                raise ApiError(resp.status, method, url, payload)
            if not decode:
                return payload
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")

    def get(self, url: str, **params: Any) -> Any:
        return self.request("GET", f"{url}?{urlencode(params)}" if params else url)

    def watch(self, url: str, resource_version: str, stop: threading.Event | None = None,
              **params: Any) -> Iterator[dict[str, Any]]:
        """Watch events ({type, object}) from resource_version on, reconnecting when the server
        ends the stream, until stop is set."""
        rv = resource_version
        while stop is None or not stop.is_set():
            query = urlencode({"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": rv,
                               "timeoutSeconds": 1800, **params})
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=None)
            try:
                conn.request("GET", f"{url}?{query}", headers=self.headers)
                resp = conn.getresponse()
                if resp.status >= 300:
                    raise ApiError(resp.status, "WATCH", url, resp.read())
                yield {"type": "OPENED", "object": {}}
                for line in resp:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # e.g. 410 Gone: the caller lists again
                        raise ApiError(event["object"].get("code", 500), "WATCH", url, line)
                    rv = event["object"]["metadata"].get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        yield event
            finally:
                conn.close()


# ---- the controller -------------------------------------------------------------------------

class Baseline:
    def __init__(self, api: Api, namespace: str, workers: int) -> None:
        from overseer.operator.settings import Settings

        self.api = api
        self.ns = namespace
        self.workers = workers
        self.settings = Settings()
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: set[str] = set()
        self.agents: dict[str, Any] = {}
        self.agents_lock = threading.Lock()
        self.writes: Counter[str] = Counter()
        self.writes_lock = threading.Lock()
        self.errors = 0

    def count(self, what: str) -> None:
        with self.writes_lock:
            self.writes[what] += 1

    def agent(self, name: str) -> Any:
        """The parsed Agent, read once (listed at start; fetched on a miss)."""
        from overseer.api import Agent

        with self.agents_lock:
            if name not in self.agents:
                self.agents[name] = Agent.model_validate(self.api.get(f"{AGENTS.format(ns=self.ns)}/{name}"))
            return self.agents[name]

    def offer(self, raw: dict[str, Any]) -> None:
        name = raw["metadata"]["name"]
        if name in self.seen or (raw.get("status") or {}).get("phase"):
            return
        self.seen.add(name)
        self.queue.put(raw)

    def dispatch(self, raw: dict[str, Any]) -> None:
        from overseer.api import Goal
        from overseer.operator.pods import render_pod

        goal = Goal.model_validate(raw)
        if goal.spec.agent_ref is None:
            return  # selectors are beyond the floor
        agent = self.agent(goal.spec.agent_ref.name)
        pod = render_pod(goal, agent, 1, self.settings)
        try:
            self.api.request("POST", f"{PODS.format(ns=self.ns)}?fieldManager=bench-baseline", pod)
        except ApiError as e:
            if e.status != 409:  # already there: ours from before
                raise
        self.count("POST pods")
        status = {"phase": "Running", "agent": agent.name, "pod": pod["metadata"]["name"], "attempt": 1,
                  "startedAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "observedGeneration": goal.generation}
        self.api.request("PATCH", f"{GOALS.format(ns=self.ns)}/{goal.name}/status?fieldManager=bench-baseline",
                         {"status": status}, content_type="application/merge-patch+json")
        self.count("PATCH goals/status")

    def work(self) -> None:
        while True:
            raw = self.queue.get()
            try:
                self.dispatch(raw)
            except Exception as e:  # noqa: BLE001 - a floor, not an operator: report and go on
                self.errors += 1
                print(f"dispatch {raw['metadata']['name']}: {e}", file=sys.stderr, flush=True)

    def run(self) -> None:
        from overseer.api import Agent

        for a in self.api.get(AGENTS.format(ns=self.ns))["items"]:
            self.agents[a["metadata"]["name"]] = Agent.model_validate(a)
        for _ in range(self.workers):
            threading.Thread(target=self.work, daemon=True).start()
        while True:
            listing = self.api.get(GOALS.format(ns=self.ns))
            for raw in listing["items"]:
                self.offer(raw)
            try:
                for event in self.api.watch(GOALS.format(ns=self.ns), listing["metadata"]["resourceVersion"]):
                    if event["type"] == "OPENED":
                        print("ready", flush=True)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.offer(event["object"])
                    elif event["type"] == "DELETED":
                        self.seen.discard(event["object"]["metadata"]["name"])
            except ApiError as e:
                print(f"watch: {e}; listing again", file=sys.stderr, flush=True)
                time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="baseline_controller", description=__doc__.splitlines()[0])
    p.add_argument("--namespace", "-n", required=True)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--stats", help="write the writes made (JSON) here on exit")
    args = p.parse_args(argv)
    ctl = Baseline(Api.from_kubeconfig(args.kubeconfig), args.namespace, args.workers)

    def finish(*_: Any) -> None:
        if args.stats:
            Path(args.stats).write_text(json.dumps({"writes": dict(ctl.writes), "errors": ctl.errors}))
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    ctl.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
