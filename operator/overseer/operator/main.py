"""`overseer-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
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
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, log_prefix=True)
    from . import handlers  # noqa: F401 - registers the handlers with kopf

    if args.metrics_port:
        start_http_server(args.metrics_port)
    namespaces = args.namespace or []
    # kopf only runs the process here; the operator's informers watch these namespaces.
    asyncio.run(kopf.operator(
        clusterwide=True,
        liveness_endpoint=args.liveness,
        standalone=True,
        memo=kopf.Memo(namespaces=namespaces),
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
