"""The goal pod's credential for the model gateway: the projected ServiceAccount token file.

The kubelet rewrites the file before the token expires, so it is read again for every call
(the file is small and in page cache) and after a 401, never kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anthropic.lib.credentials import AccessToken

from overseer.api.gateway import BUDGET_HEADER, TOKEN_FILE_ENV


class TokenFile:
    """An anthropic SDK credentials provider reading a token file on each request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, *, force_refresh: bool = False) -> AccessToken:
        # expires_at=0: the SDK asks again before every request.
        return AccessToken(token=self.path.read_text().strip(), expires_at=0)


def client_options() -> dict[str, Any]:
    """Keyword arguments for anthropic.AsyncAnthropic: the gateway token when the pod has one."""
    path = os.environ.get(TOKEN_FILE_ENV)
    return {"credentials": TokenFile(path)} if path else {}


def exhausted_budget(error: Any) -> str | None:
    """The budget the gateway names when it refuses a call for lack of budget, else None."""
    response = getattr(error, "response", None)
    return response.headers.get(BUDGET_HEADER) if response is not None else None
