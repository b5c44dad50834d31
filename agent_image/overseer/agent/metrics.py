"""Prometheus metrics of one goal pod, served on its health port (health.py). Tokens and cost
are not counted here: the model gateway counts them once for every pod (gateway/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ITERATION = Gauge("overseer_agent_iteration", "Model calls made by this goal so far")
ITERATIONS = Counter("overseer_agent_iterations_total", "Model answers the loop acted on")
TOOL_CALLS = Counter("overseer_agent_tool_calls_total", "Tool calls run, by tool and risk class (low, medium, high)",
                     ["tool", "risk"])
MODEL_CALL_SECONDS = Histogram("overseer_agent_model_call_duration_seconds",
                               "Time from sending a model request to its whole answer",
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320))
MODEL_CALL_ERRORS = Counter("overseer_agent_model_call_errors_total",
                            "Model calls that failed, by HTTP status (0: no answer)", ["status"])
CHECKPOINT_SECONDS = Histogram("overseer_agent_checkpoint_duration_seconds", "Time to save one checkpoint",
                               buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
