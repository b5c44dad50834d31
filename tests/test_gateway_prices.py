"""The price table: list prices by default, cache-aware cost, overrides from the ConfigMap file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from overseer.prices import PriceTable, PriceTableError


def test_cache_writes_and_reads_are_priced_against_the_input_price() -> None:
    sonnet = PriceTable().price("claude-sonnet-5-5")  # $2 in, $10 out per million
    assert sonnet is not None
    usage = {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_read_input_tokens": 2_000_000,
             "cache_creation_input_tokens": 3_000_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1_000_000, "ephemeral_1h_input_tokens": 2_000_000}}

    # 2 input + 1 output + 2 * 0.1 * 2 read + 1 * 1.25 * 2 (5 minutes) + 2 * 2 * 2 (1 hour)
    assert sonnet.cost(usage) == Decimal("2") + Decimal("1") + Decimal("0.4") + Decimal("2.5") + Decimal("8")


def test_cache_creation_without_a_split_is_priced_as_five_minute_writes() -> None:
    opus = PriceTable().price("claude-opus-5-5")  # $4 in
    assert opus is not None
    assert opus.cost({"cache_creation_input_tokens": 1_000_000}) == Decimal("5")


def test_dated_model_names_take_the_price_of_their_model() -> None:
    table = PriceTable()
    assert table.price("claude-haiku-4-5-20251001") == table.price("claude-haiku-4-5")
    assert table.price("claude-unknown-9") is None


def test_the_price_file_adds_models_and_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("claude-sonnet-5-5: {input: 1, output: 5}\nin-house-model: {input: 1.5, output: 6, cacheRead: 0.3}\n")
    table = PriceTable(path)

    assert table.price("claude-sonnet-5-5").cost({"input_tokens": 1_000_000}) == Decimal(1)  # type: ignore[union-attr]
    in_house = table.price("in-house-model")
    assert in_house is not None and in_house.cache_read == Decimal("0.3")
    assert in_house.cache_write_1h == Decimal("3.0")
    assert table.price("claude-opus-5-5") is not None  # defaults stay


def test_a_broken_price_file_names_the_model_and_field(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("claude-sonnet-5-5: {input: 1, output: -5}\n")
    with pytest.raises(PriceTableError, match=r"claude-sonnet-5-5.output: must not be negative"):
        PriceTable(path)
    path.write_text("claude-sonnet-5-5: {input: 1, outptu: 5}\n")
    with pytest.raises(PriceTableError, match=r"claude-sonnet-5-5: expected a mapping with input and output"):
        PriceTable(path)
