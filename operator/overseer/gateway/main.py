"""`overseer-gateway`: serve the Messages API to goal pods."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

import uvloop
from prometheus_client import start_http_server
from pydantic import ValidationError

from overseer.kube import StaticCredentials, load_credentials

from .app import Gateway
from .settings import GatewaySettings


async def _login() -> StaticCredentials:
    return load_credentials()


async def _serve(settings: GatewaySettings) -> None:
    gateway = Gateway(settings, _login)
    server = await gateway.start()
    # What startup made (modules, the gateway) is never scanned by the collector again: its passes
    # over the young objects of calls in flight stay short, so no stream waits on one.
    gc.freeze()
    print(f"overseer-gateway listening on http://{settings.host}:{server.port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await gateway.stop(timeout=30)


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
    # uvloop: less CPU per event passed on than asyncio's own loop, so less time queued for a core.
    uvloop.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
