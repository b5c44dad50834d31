"""`overseer-gateway`: serve the Messages API to goal pods."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

import uvloop
from aiohttp import web
from prometheus_client import start_http_server
from pydantic import ValidationError

from overseer.kube import StaticCredentials, load_credentials

from .app import build_app
from .settings import GatewaySettings


async def _login() -> StaticCredentials:
    return load_credentials()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="overseer-gateway",
                                     description="The model gateway: goal pods call the Messages API through it.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings()
    except ValidationError as e:
        print(f"overseer-gateway: invalid configuration (OVERSEER_GATEWAY_* environment): {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    app = build_app(settings, _login)
    # What startup made (modules, the app) is never scanned by the collector again: its passes over
    # the young objects of calls in flight stay short, so no stream waits on one.
    gc.freeze()
    # uvloop: less CPU per event passed on than asyncio's own loop, so less time queued for a core.
    web.run_app(app, host=settings.host, port=settings.port, access_log=None, shutdown_timeout=30,
                loop=uvloop.new_event_loop(),
                print=lambda line: print(line.replace("Running on", "overseer-gateway listening on"), flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
