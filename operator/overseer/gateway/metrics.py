"""Prometheus metrics of the gateway (served on OVERSEER_GATEWAY_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .ledger import Spend

TOKENS = Counter("overseer_gateway_tokens_total", "Model tokens by namespace, agent, model and kind",
                 ["namespace", "agent", "model", "kind"])
COST = Counter("overseer_gateway_cost_usd_total", "US dollars spent by namespace, agent and model",
               ["namespace", "agent", "model"])
REQUESTS = Histogram("overseer_gateway_request_duration_seconds", "Time from a call's arrival to its last byte",
                     ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
UPSTREAM_ERRORS = Counter("overseer_gateway_upstream_errors_total",
                          "Upstream answers that were not 200, by status (0: no answer)", ["status"])
REFUSALS = Counter("overseer_gateway_refusals_total", "Calls refused by the gateway, by HTTP status and reason",
                   ["status", "reason"])
BUDGET_REFUSALS = Counter("overseer_gateway_budget_refusals_total",
                          "Calls refused because a budget is exhausted, by namespace, agent and budget",
                          ["namespace", "agent", "budget"])
BUDGET_WAITS = Counter("overseer_gateway_budget_waits_total",
                      "Calls answered 429 because only the holds of calls in flight stood in a budget's way, by "
                      "namespace and agent", ["namespace", "agent"])
RATE_LIMITED = Counter("overseer_gateway_rate_limited_total",
                       "Calls answered 429 because a rate limit was reached, by namespace and agent",
                       ["namespace", "agent"])


def spent(spend: Spend) -> None:
    """Count one priced call."""
    for kind, n in (("input", spend.input_tokens), ("output", spend.output_tokens),
                    ("cache_read", spend.cache_read_tokens), ("cache_write_5m", spend.cache_write_5m_tokens),
                    ("cache_write_1h", spend.cache_write_1h_tokens)):
        if n:
            TOKENS.labels(spend.namespace, spend.agent, spend.model, kind).inc(n)
    COST.labels(spend.namespace, spend.agent, spend.model).inc(float(spend.cost_usd))
