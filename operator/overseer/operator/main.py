"""`overseer-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf
from prometheus_client import start_http_server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="overseer-operator", description="Run the Overseer operator.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; globs like team-* work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster (default)")
    p.add_argument("--liveness", metavar="URL", help="serve liveness at this URL, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port")
    peering = p.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering: the only instance (default)")
    peering.add_argument("--peering", metavar="NAME", help="coordinate replicas through this KopfPeering")
    p.add_argument("--priority", type=int, default=0, help="peering priority; give each replica its own")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)
    if not args.verbose:
        # kopf logs every handled event at INFO: noise, and measurable CPU at thousands of goals.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from . import handlers  # noqa: F401 - registers the handlers with kopf

    if args.metrics_port:
        start_http_server(args.metrics_port)
    namespaces = args.namespace or []
    asyncio.run(kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
