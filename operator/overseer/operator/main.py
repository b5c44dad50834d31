"""`overseer-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable

import kopf
from prometheus_client import disable_created_metrics, start_http_server
from pydantic import ValidationError

from .health import HealthServer, Probes
from .leader import default_namespace
from .settings import Settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="overseer-operator", description="Run the Overseer operator.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; globs like team-* work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster (default)")
    p.add_argument("--leader-elect", action="store_true",
                   help="run as one of several replicas: only the holder of Lease overseer-operator reconciles")
    p.add_argument("--leader-elect-namespace", metavar="NS",
                   help="namespace of that Lease (default: POD_NAMESPACE, the pod's own, or overseer-system)")
    p.add_argument("--health-port", type=int, metavar="PORT",
                   help="serve GET /healthz (liveness: the event loop and the informers make progress) and "
                        "/readyz (every cache filled and, under --leader-elect, holding the Lease) on this port")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"overseer-operator: invalid configuration (OVERSEER_* environment): {e}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose, log_prefix=True)
    # The probes answer from here on: loading the handlers (the anthropic SDK among them) takes
    # seconds, more on a busy node, and is starting, not wedged.
    probes = Probes()
    health = HealthServer(args.health_port, probes.snapshot).start() if args.health_port is not None else None
    from . import handlers  # noqa: F401 - registers the handlers with kopf

    if args.metrics_port:
        # A *_created gauge beside every counter and histogram: noise to Prometheus.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        start_http_server(args.metrics_port)
    lease_namespace = (args.leader_elect_namespace or default_namespace()) if args.leader_elect else None
    quiet_collector()
    try:
        with asyncio.Runner(loop_factory=event_loop()) as runner:
            return runner.run(run(settings, args.namespace or [], lease_namespace, probes))
    finally:
        if health is not None:
            health.stop()


def quiet_collector() -> None:
    """Keep the cyclic garbage collector off what never becomes garbage. What the imports made is
    frozen out of its reach, and a young collection waits for 50,000 new objects instead of 700: the
    watch events the operator decodes are trees without cycles, freed by reference counting. In a
    burst of 2,000 goals the collector took 0.45 s of the operator's 8.6 s of CPU with Python's
    defaults and 0.07 s with these (docs/performance.md, Dispatch)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def event_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop (libuv, and its own TLS transport): less CPU per goal than asyncio's own
    loop in both dispatch runs measured, by 9% and 47% (docs/performance.md, Dispatch)."""
    import uvloop

    return uvloop.new_event_loop


async def run(settings: Settings, namespaces: list[str], lease_namespace: str | None, probes: Probes) -> int:
    # kopf only runs the process here; the operator's informers watch these namespaces.
    memo = kopf.Memo(settings=settings, namespaces=namespaces, lease_namespace=lease_namespace,
                     stop=asyncio.Event(), lost_lease=False, probes=probes)
    await kopf.operator(clusterwide=True, standalone=True, memo=memo, stop_flag=memo.stop)
    return 1 if memo.lost_lease else 0


if __name__ == "__main__":
    sys.exit(main())
