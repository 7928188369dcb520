"""Token usage sums, price tables and cost rounding."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.trajectories import trae
from cohort.sdk.trajectories.usage import (
    PriceTable,
    fill_usage_and_cost,
    price_micro_usd,
    sum_usage,
    trajectory_usage,
)

DATA = Path(__file__).parent.parent / "data"
Usage = trajectory_pb2.TokenUsage


def test_sum_usage_none_handling_and_simulated():
    total = sum_usage([Usage(input_tokens=10), Usage(input_tokens=5, output_tokens=3), Usage(simulated=True)])
    assert total.input_tokens == 15 and total.output_tokens == 3
    assert not total.HasField("reasoning_tokens") and not total.HasField("cache_read_input_tokens")
    assert total.simulated
    assert not sum_usage([Usage(), Usage()]).HasField("input_tokens")
    zero = sum_usage([Usage(reasoning_tokens=0)])
    assert zero.HasField("reasoning_tokens") and zero.reasoning_tokens == 0
    assert not sum_usage([]).simulated


def test_price_is_tokens_times_usd_per_million_in_micro_usd():
    table = PriceTable.load(None)
    usage = Usage(
        input_tokens=1000, output_tokens=200, cache_read_input_tokens=500, cache_creation_input_tokens=100
    )
    # claude-sonnet-4: 3 / 15 / 0.3 / 3.75 USD per million tokens.
    assert table.price_micro_usd("claude-sonnet-4-20250514", usage) == 3000 + 3000 + 150 + 375
    assert price_micro_usd("claude-sonnet-4", usage) == 6525


def test_cost_rounds_half_up_once():
    table = PriceTable.from_mapping({"models": {"m": {"input": "0.5", "output": "0.25"}}})
    assert table.price_micro_usd("m", Usage(input_tokens=1)) == 1  # 0.5 -> 1
    assert table.price_micro_usd("m", Usage(output_tokens=1)) == 0  # 0.25 -> 0
    assert table.price_micro_usd("m", Usage(input_tokens=1, output_tokens=1)) == 1  # 0.75 -> 1
    assert table.price_micro_usd("m", Usage(input_tokens=3)) == 2  # 1.5 -> 2
    # Floats in a file are read as their decimal text: 0.1 * 3 is exactly 0.3, not 0.30000000000000004.
    assert PriceTable.from_mapping({"models": {"f": {"input": 0.1}}}).get("f").input == Decimal("0.1")


def test_unknown_model_costs_nothing_and_is_reported():
    table = PriceTable.load(None)
    assert table.price_micro_usd("mystery-model", Usage(input_tokens=10**6)) == 0
    assert not table.is_known("mystery-model") and table.get("mystery-model") is None
    assert (
        table.is_known("toolbench-sim")
        and table.price_micro_usd("toolbench-sim", Usage(input_tokens=10**6)) > 0
    )
    assert table.is_known("openai/gpt-4o-mini")
    assert table.get("gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")  # longest prefix, not gpt-4o


def test_price_file_extends_or_replaces(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"my-model": {"input": 2, "output": 8}, "gpt-4o": {"input": 1}}}))
    table = PriceTable.load(path)
    assert table.price_micro_usd("my-model", Usage(input_tokens=10, output_tokens=10)) == 100
    assert table.get("gpt-4o").output == 0 and table.get("gpt-4o").input == 1
    assert table.is_known("claude-sonnet-4")
    path.write_text(json.dumps({"replace_defaults": True, "models": {"only": {"input": 1}}}))
    assert set(PriceTable.load(path).prices) == {"only"}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("[1]", "{path}"),
        ('{"models": []}', "{path}.models"),
        ('{"models": {"m": {"inputs": 1}}}', "{path}.models.m.inputs"),
        ('{"models": {"m": {"input": -1}}}', "{path}.models.m.input"),
        ('{"models": {"m": {"input": "cheap"}}}', "{path}.models.m.input"),
        ('{"replace_defaults": "yes"}', "{path}.replace_defaults"),
        ('{"models": ', "{path}"),
    ],
)
def test_bad_price_files(tmp_path, content, field):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument) as caught:
        PriceTable.load(path)
    assert caught.value.field == field.format(path=path)


def test_trajectory_usage_prefers_interactions_over_steps():
    t = trae.trae_to_trajectory(json.loads((DATA / "trae_real_world.json").read_text(encoding="utf-8"))[0])
    usage = trajectory_usage(t)
    assert usage.input_tokens == 1834 + 2210 and usage.output_tokens == 96 + 41
    assert usage.cache_read_input_tokens == 1024 and usage.reasoning_tokens == 0
    assert not usage.HasField("cache_creation_input_tokens")
    del t.llm_interactions[:]
    steps_only = trajectory_usage(t)
    assert steps_only.input_tokens == 1834 and steps_only.output_tokens == 96


def test_fill_usage_and_cost():
    t = trae.trae_to_trajectory(json.loads((DATA / "trae_seed_example.json").read_text(encoding="utf-8")))
    assert fill_usage_and_cost(t, PriceTable.load(None)) == []
    assert t.total_usage.input_tokens == 150 and t.total_usage.output_tokens == 75
    assert t.cost_micro_usd == 150 * 3 + 75 * 15
    # Already set values are kept.
    t.cost_micro_usd = 7
    t.total_usage.input_tokens = 1
    fill_usage_and_cost(t, PriceTable.load(None))
    assert t.cost_micro_usd == 7 and t.total_usage.input_tokens == 1


def test_fill_usage_and_cost_reports_unknown_models():
    t = trajectory_pb2.Trajectory(model="mystery")
    t.llm_interactions.add(model="mystery").response.usage.input_tokens = 100
    assert fill_usage_and_cost(t, PriceTable.load(None)) == ["mystery"]
    assert t.cost_micro_usd == 0 and t.total_usage.input_tokens == 100
