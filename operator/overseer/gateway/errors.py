"""Errors in the Messages API's own shape, so the agent's SDK raises the exception it knows
(AuthenticationError, PermissionDeniedError, RateLimitError ...) and retries what it would
retry from the real API."""

from __future__ import annotations

import math
import secrets

import orjson

from .http import Response

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "api_error",
               504: "api_error", 529: "overloaded_error"}


class GatewayError(Exception):
    """A refusal to send back to the caller as an API error."""

    def __init__(self, status: int, message: str, error_type: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.retry_after = retry_after
        self.headers = headers

    def answer(self) -> Response:
        return error_answer(self.status, self.message, self.error_type, self.retry_after, self.headers)


def request_id() -> str:
    return "req_gw_" + secrets.token_hex(12)


def error_answer(status: int, message: str, error_type: str | None = None,
                 retry_after: float | None = None, extra_headers: dict[str, str] | None = None) -> Response:
    """{"type": "error", "error": {"type": ..., "message": ...}} with a request-id header."""
    rid = request_id()
    headers = {"request-id": rid, "content-type": "application/json", **(extra_headers or {})}
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(max(1, round(retry_after * 1000)))
    body = {"type": "error", "request_id": rid,
            "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message}}
    return Response(status, list(headers.items()), orjson.dumps(body))
