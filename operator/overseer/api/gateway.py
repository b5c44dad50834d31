"""What goal pods and the model gateway agree on: written once, imported by both sides."""

from __future__ import annotations

from overseer.contract import Env

AUDIENCE = "overseer-gateway"
"""Audience of the projected ServiceAccount token a goal pod presents to the gateway."""
TOKEN_DIR = "/var/run/secrets/overseer.dev/gateway"
"""Where a goal pod's projected gateway token volume is mounted."""
TOKEN_FILE = f"{TOKEN_DIR}/token"
"""The token itself; the kubelet rewrites it before it expires, so it is read per request."""
TOKEN_FILE_ENV = Env.GATEWAY_TOKEN_FILE
"""Environment variable naming the token file in a goal pod."""
TOKEN_EXPIRY_SECONDS = 600
"""Lifetime of the projected token (the shortest the API server allows): a token copied out of a
pod stops working soon, and stops at once when the pod is deleted (it is bound to the pod)."""
BUDGET_HEADER = "overseer-budget-exhausted"
"""Set on the gateway's 402 answer to a call that does not fit a budget; names the budget
(maxCostPerGoal, maxTokensPerGoal). The agent ends the goal with reason BudgetExhausted."""
