"""Token usage sums and the cost of a trajectory.

Prices are USD per million tokens, so a count times its price is exactly micro-USD
(`tokens * usd_per_million` micro-USD). The terms of one call are summed exactly (prices are held as
`Decimal` from their decimal text) and the total is rounded once to an integer micro-USD, half up.
Each count is charged at its own price: `input_tokens` (uncached input), `output_tokens`,
`cache_read_input_tokens`, `cache_creation_input_tokens` and `reasoning_tokens`; reasoning is free by
default because providers that report it (OpenAI) already count it within the output tokens.

Models are matched exactly, then without a `provider/` prefix, then by the longest table entry the
model name starts with (so `claude-sonnet-4-20250514` finds `claude-sonnet-4`). An unknown model
costs 0; `PriceTable.get`/`is_known` tell it apart from a free one.

A price file (JSON) extends or replaces the built-in table:
`{"replace_defaults": false, "models": {"my-model": {"input": 1.5, "output": 6, "cache_read": 0.15}}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument

_COUNTS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_creation_input_tokens", "cache_creation"),
    ("reasoning_tokens", "reasoning"),
)
_PRICE_KEYS = tuple(price for _, price in _COUNTS)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of each kind."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    cache_creation: Decimal = Decimal(0)
    reasoning: Decimal = Decimal(0)


def _price(**usd_per_million: str) -> ModelPrice:
    return ModelPrice(**{key: Decimal(value) for key, value in usd_per_million.items()})


# List prices (USD per million tokens) of a few well-known models; override with a price file.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": _price(input="2.5", output="10", cache_read="1.25"),
    "gpt-4o-mini": _price(input="0.15", output="0.6", cache_read="0.075"),
    "gpt-4.1": _price(input="2", output="8", cache_read="0.5"),
    "gpt-4.1-mini": _price(input="0.4", output="1.6", cache_read="0.1"),
    "gpt-4.1-nano": _price(input="0.1", output="0.4", cache_read="0.025"),
    "o3-mini": _price(input="1.1", output="4.4", cache_read="0.55"),
    "claude-opus-4": _price(input="15", output="75", cache_read="1.5", cache_creation="18.75"),
    "claude-sonnet-4": _price(input="3", output="15", cache_read="0.3", cache_creation="3.75"),
    "claude-3-7-sonnet": _price(input="3", output="15", cache_read="0.3", cache_creation="3.75"),
    "claude-3-5-sonnet": _price(input="3", output="15", cache_read="0.3", cache_creation="3.75"),
    "claude-3-5-haiku": _price(input="0.8", output="4", cache_read="0.08", cache_creation="1"),
    "gemini-2.5-pro": _price(input="1.25", output="10", cache_read="0.31"),
    "gemini-2.5-flash": _price(input="0.3", output="2.5", cache_read="0.075"),
    # The offline simulator: small but non-zero, so budgets and cost reports have something to show.
    "toolbench-sim": _price(input="0.1", output="0.4"),
}


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name."""

    prices: Mapping[str, ModelPrice]

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The built-in table, extended (or replaced) by the JSON price file at `path`."""
        if path is None:
            return cls(dict(DEFAULT_PRICES))
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(str(path), f"cannot read the price file: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                str(path), f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        return cls.from_mapping(document, source=str(path))

    @classmethod
    def from_mapping(cls, document: Any, *, source: str = "prices") -> PriceTable:
        if not isinstance(document, Mapping):
            raise InvalidArgument(source, "a price table must be a JSON object")
        replace = document.get("replace_defaults", False)
        if not isinstance(replace, bool):
            raise InvalidArgument(f"{source}.replace_defaults", "must be true or false")
        models = document.get("models", {})
        if not isinstance(models, Mapping):
            raise InvalidArgument(f"{source}.models", "must be an object of model name -> prices")
        prices = {} if replace else dict(DEFAULT_PRICES)
        for model, entry in models.items():
            prices[model] = _parse_model_price(entry, f"{source}.models.{model}")
        return cls(prices)

    def get(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when the table does not know it."""
        found = self.prices.get(model)
        if found is not None:
            return found
        bare = model.rsplit("/", 1)[-1]
        found = self.prices.get(bare)
        if found is not None:
            return found
        prefixes = [name for name in self.prices if bare.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def is_known(self, model: str) -> bool:
        return self.get(model) is not None

    def price_micro_usd(self, model: str, usage: trajectory_pb2.TokenUsage) -> int:
        """Cost of `usage` on `model` in integer micro-USD (0 for an unknown model)."""
        price = self.get(model)
        if price is None:
            return 0
        return _round_micro(_cost(price, usage))


def _parse_model_price(entry: Any, path: str) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise InvalidArgument(path, "must be an object of token kind -> USD per million tokens")
    values: dict[str, Decimal] = {}
    for key, value in entry.items():
        if key not in _PRICE_KEYS:
            raise InvalidArgument(f"{path}.{key}", f"unknown token kind; expected one of {list(_PRICE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidArgument(f"{path}.{key}", "must be a number (USD per million tokens)")
        try:
            # Through str so 0.1 is the decimal 0.1, not the binary float's expansion.
            amount = Decimal(str(value))
        except InvalidOperation as exc:
            raise InvalidArgument(f"{path}.{key}", f"{value!r} is not a number") from exc
        if not amount.is_finite() or amount < 0:
            raise InvalidArgument(f"{path}.{key}", "must be a finite number >= 0")
        values[key] = amount
    return ModelPrice(**values)


def _cost(price: ModelPrice, usage: trajectory_pb2.TokenUsage) -> Decimal:
    total = Decimal(0)
    for count_field, price_field in _COUNTS:
        if usage.HasField(count_field):
            total += getattr(usage, count_field) * getattr(price, price_field)
    return total


def _round_micro(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price_micro_usd(model: str, usage: trajectory_pb2.TokenUsage, prices: PriceTable | None = None) -> int:
    """Cost of `usage` on `model` in micro-USD with `prices` (the built-in table by default)."""
    return (prices or _DEFAULT_TABLE).price_micro_usd(model, usage)


_DEFAULT_TABLE = PriceTable(DEFAULT_PRICES)


def sum_usage(usages: Iterable[trajectory_pb2.TokenUsage]) -> trajectory_pb2.TokenUsage:
    """Field-wise sum: a count stays unset only when unset everywhere; `simulated` if any was."""
    total = trajectory_pb2.TokenUsage()
    for usage in usages:
        for count_field, _ in _COUNTS:
            if usage.HasField(count_field):
                setattr(total, count_field, getattr(total, count_field) + getattr(usage, count_field))
        total.simulated = total.simulated or usage.simulated
    return total


def trajectory_usage(trajectory: trajectory_pb2.Trajectory) -> trajectory_pb2.TokenUsage:
    """Usage summed over the LLM interactions; over the steps when there are none.

    Never both: Trae records each call twice (the interaction and the step's `llm_response`).
    """
    return sum_usage(usage for _, usage in _priced_calls(trajectory))


def _priced_calls(trajectory: trajectory_pb2.Trajectory) -> Iterator[tuple[str, trajectory_pb2.TokenUsage]]:
    """(model, usage) of every LLM call, from the interactions, or else from the steps."""
    if trajectory.llm_interactions:
        for interaction in trajectory.llm_interactions:
            if interaction.response.HasField("usage"):
                model = interaction.model or interaction.response.model or trajectory.model
                yield model, interaction.response.usage
        return
    for step in trajectory.agent_steps:
        if step.HasField("usage"):
            yield trajectory.model, step.usage
        elif step.llm_response.HasField("usage"):
            yield step.llm_response.model or trajectory.model, step.llm_response.usage


def fill_usage_and_cost(trajectory: trajectory_pb2.Trajectory, prices: PriceTable) -> list[str]:
    """Set `total_usage` and `cost_micro_usd` where unset; returns the models the table did not know.

    Cost is priced call by call with each call's own model, rounded once over the whole run.
    """
    calls = list(_priced_calls(trajectory))
    if not trajectory.HasField("total_usage") and calls:
        trajectory.total_usage.CopyFrom(sum_usage(usage for _, usage in calls))
    if not calls and trajectory.HasField("total_usage"):
        # A recorder that reported only the total: price it on the run's model.
        calls = [(trajectory.model, trajectory.total_usage)]
    unknown: list[str] = []
    total = Decimal(0)
    for model, usage in calls:
        price = prices.get(model)
        if price is None:
            if model not in unknown:
                unknown.append(model)
            continue
        total += _cost(price, usage)
    if trajectory.cost_micro_usd == 0:
        trajectory.cost_micro_usd = _round_micro(total)
    return unknown
