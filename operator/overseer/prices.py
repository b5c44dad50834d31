"""What a model call costs in US dollars: a price table per model, cache-aware.

Prices are US dollars per million tokens. A model row names `input` and `output`; cache writes
cost 1.25x input (5-minute entries) and 2x input (1-hour entries), cache reads 0.1x input,
unless the row sets `cacheWrite5m`, `cacheWrite1h` or `cacheRead` itself. The defaults below are
the published list prices when this was written; the ConfigMap overseer-gateway-prices (mounted
as a file, OVERSEER_GATEWAY_PRICES_FILE) adds models and overrides these, e.g. for a negotiated
rate or an Anthropic-compatible endpoint with prices of its own::

    claude-sonnet-5-5: {input: 2, output: 10}
    my-proxy-model: {input: 1.5, output: 6, cacheRead: 0.3}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from overseer.mounted_file import MountedYaml

MILLION = Decimal(1_000_000)
CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ = Decimal("1.25"), Decimal(2), Decimal("0.1")
_DATED = re.compile(r"-\d{8}$")  # claude-haiku-4-5-20251001 is priced as claude-haiku-4-5

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-fable-5-1": {"input": 10, "output": 50, "cacheRead": 0.25},
    "claude-mythos-5-1": {"input": 10, "output": 50, "cacheRead": 0.25},
    "claude-fable-5": {"input": 10, "output": 50},
    "claude-mythos-5": {"input": 10, "output": 50},
    "claude-opus-5-5": {"input": 4, "output": 20},
    "claude-opus-5": {"input": 5, "output": 25},
    "claude-opus-4-8": {"input": 5, "output": 25},
    "claude-opus-4-7": {"input": 5, "output": 25},
    "claude-opus-4-6": {"input": 5, "output": 25},
    "claude-opus-4-5": {"input": 5, "output": 25},
    "claude-sonnet-5-5": {"input": 2, "output": 10},
    "claude-sonnet-5": {"input": 2, "output": 10},
    "claude-sonnet-4-6": {"input": 3, "output": 15},
    "claude-haiku-5-5": {"input": 0.1, "output": 0.5},
    "claude-haiku-4-5": {"input": 1, "output": 5},
}
_FIELDS = {"input", "output", "cacheWrite5m", "cacheWrite1h", "cacheRead"}


class PriceTableError(ValueError):
    """A price table that cannot be used; the message names the model and field."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens of each kind."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def cost(self, usage: dict[str, Any]) -> Decimal:
        """The dollars of one answer's usage (the Messages API's usage object)."""
        written = int(usage.get("cache_creation_input_tokens") or 0)
        split = usage.get("cache_creation") or {}
        hour = int(split.get("ephemeral_1h_input_tokens") or 0)
        five = int(split.get("ephemeral_5m_input_tokens") or 0) if split else written
        five += max(0, written - five - hour)  # creation the split does not explain: the default 5 minutes
        return (int(usage.get("input_tokens") or 0) * self.input
                + int(usage.get("output_tokens") or 0) * self.output
                + five * self.cache_write_5m + hour * self.cache_write_1h
                + int(usage.get("cache_read_input_tokens") or 0) * self.cache_read) / MILLION

    def most(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The most a call can cost: all input written to the 1-hour cache, all output used."""
        return (input_tokens * max(self.input, self.cache_write_1h, self.cache_write_5m)
                + output_tokens * self.output) / MILLION


def _price(model: str, row: Any) -> Price:
    if not isinstance(row, dict) or "input" not in row or "output" not in row:
        raise PriceTableError(f"price of {model}: expected a mapping with input and output (US dollars per "
                              f"million tokens), got {row!r}")
    unknown = set(row) - _FIELDS
    if unknown:
        raise PriceTableError(f"price of {model}: unknown fields {sorted(unknown)}; expected some of {sorted(_FIELDS)}")
    values: dict[str, Decimal] = {}
    for name, value in row.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PriceTableError(f"price of {model}.{name}: expected a number, got {value!r}")
        try:
            values[name] = Decimal(str(value))
        except ArithmeticError as e:
            raise PriceTableError(f"price of {model}.{name}: expected a number, got {value!r}") from e
        if values[name] < 0:
            raise PriceTableError(f"price of {model}.{name}: must not be negative, got {value!r}")
    base = values["input"]
    return Price(base, values["output"], values.get("cacheWrite5m", base * CACHE_WRITE_5M),
                 values.get("cacheWrite1h", base * CACHE_WRITE_1H), values.get("cacheRead", base * CACHE_READ))


class PriceTable:
    """Model name -> Price, from the defaults and an optional file that is re-read when it changes
    (a mounted ConfigMap is updated in place)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._file = MountedYaml(path, PriceTableError)
        self._prices = self._build({})
        self.reload()

    @staticmethod
    def _build(overrides: dict[str, Any]) -> dict[str, Price]:
        rows = {**DEFAULT_PRICES, **overrides}
        return {model: _price(model, row) for model, row in rows.items()}

    def reload(self) -> None:
        """Read the file again if it changed; a broken file keeps the last good table and raises."""
        if (data := self._file.changed()) is None:
            return
        if not isinstance(data, dict):
            raise PriceTableError(f"{self._file.path}: expected a mapping of model name to price")
        self._prices = self._build(data)

    def price(self, model: str) -> Price | None:
        """The price of a model (dated names fall back to their undated one), None if unknown."""
        return self._prices.get(model) or self._prices.get(_DATED.sub("", model))
