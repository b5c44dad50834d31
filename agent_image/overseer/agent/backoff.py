"""How long the loop waits before asking the model again: the one retry layer of a goal pod.

The SDK retries nothing (`max_retries=0`, see `model_client`): were both to retry, the SDK's
attempts times the loop's would multiply (4 x 5 gave 25 calls per outage). The loop owns it:
the model's `retry-after` (or `retry-after-ms`) when it sends one, else exponential backoff with
jitter, so the goal pods an outage hit at once do not come back in step.
"""

from __future__ import annotations

import os
import random
import ssl
from typing import Any

from .sdk import anthropic

from . import gateway_token


def model_client() -> anthropic.AsyncAnthropic:
    """The goal pod's model client: retries are the loop's (see the module docstring). Without a
    tracer provider named by the environment, OpenTelemetry's spans would neither record nor
    propagate: the client has none, and the SDK's tracing modules stay unloaded (sdk.DEFERRED)."""
    traced = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))
    options = gateway_token.client_options()
    if plain_http(os.environ):
        # No TLS on the way: the HTTP client's default context would load a CA bundle (tens of ms of
        # every start) for nothing. This one trusts no certificate, so a redirect to https fails.
        options["http_client"] = anthropic.DefaultAsyncHttpxClient(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    return anthropic.AsyncAnthropic(max_retries=0, open_telemetry=None if traced else {"traces": False}, **options)


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def plain_http(env: Any) -> bool:
    """Whether the model is reached over plain HTTP (a gateway in the cluster, ANTHROPIC_BASE_URL
    http://...) without a proxy, which could itself be reached over TLS."""
    return env.get("ANTHROPIC_BASE_URL", "").startswith("http://") and not any(env.get(v) for v in PROXY_VARIABLES)


def retry_after(error: Any) -> float | None:
    """Seconds the API asked to wait in an error response's headers, or None."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(response.headers.get(header, ""))
        except ValueError:
            continue  # absent, or an HTTP date: fall back to our own backoff
        if value >= 0:
            return value * scale
    return None


def delay(failures: int, error: Any, base: float, cap: float) -> float:
    """The wait after the `failures`-th failed call in a row: what the API asked for (at most cap),
    else base * 2^(failures-1), at most cap, of which the upper half is random ("equal jitter")."""
    asked = retry_after(error)
    if asked is not None:
        return min(asked, cap)
    ceiling = min(cap, base * 2 ** (failures - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
