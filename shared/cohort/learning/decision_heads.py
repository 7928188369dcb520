"""The decision-head policy: hashed sparse features, batch encoding and exact log-probabilities.

Every Cohort component computes a head's distribution exactly this way (`cohort.policy.snapshot`
serves single decisions with the same formula, written for one decision at a time).

A head with `B` buckets (a power of two) scores option `a_i` of a decision with context features `x`
and optional per-option features `f_i` through the sparse row

    [(bucket(a_i + "\\x1f", B), 1.0)]                                    # the option's bias
  + [(bucket(a_i + "\\x1f" + name, B), v) for name, v in sorted(x.items())]
  + [(bucket("\\x1e" + name, B), v) for name, v in sorted(f_i.items())]  # shared across options

with `bucket(key, B) = int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little") & (B - 1)`.
`logit_i = sum(W[idx] * val) / temperature`; the distribution is the softmax of the logits and
log-probabilities are the exact log-softmax. Context features are crossed with the option (so each
option learns its own response to the context); per-option features are not (one weight per name,
shared by every option, so a candidate's own properties generalize across candidates).

Nothing here reads a protobuf message: `cohort.policy.encode_batch` checks recorded decisions
(`check_recorded_decision`) and hands what it read to `encode_checked`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from cohort.learning.arrays import BoolArray, FloatArray, Int64Array

OPTION_SEPARATOR = "\x1f"
SHARED_PREFIX = "\x1e"

_BUCKET_CACHE_SIZE = 1 << 18


# Hashing dominates a single decision's cost; agents reuse a small vocabulary of option and feature
# names, so the (key, buckets) pairs repeat and a bounded LRU makes the common case a dict lookup.
@lru_cache(maxsize=_BUCKET_CACHE_SIZE)
def bucket(key: str, buckets: int) -> int:
    """The hashed feature bucket of `key` in a space of `buckets` (a power of two)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (buckets - 1)


def option_row(
    option: str,
    features: Sequence[tuple[str, float]],
    option_features: Mapping[str, float] | None,
    buckets: int,
) -> tuple[list[int], list[float]]:
    """The sparse row (indices, values) of one option; `features` are the context's, sorted by name."""
    indices = [bucket(option + OPTION_SEPARATOR, buckets)]
    values = [1.0]
    prefix = option + OPTION_SEPARATOR
    for name, value in features:
        indices.append(bucket(prefix + name, buckets))
        values.append(value)
    if option_features:
        for name, value in sorted(option_features.items()):
            indices.append(bucket(SHARED_PREFIX + name, buckets))
            values.append(value)
    return indices, values


def option_rows(
    options: Sequence[str],
    features: Mapping[str, float],
    option_features: Sequence[Mapping[str, float]],
    buckets: int,
) -> list[tuple[list[int], list[float]]]:
    """The sparse rows of every option of one decision (`option_features` empty or aligned)."""
    ordered = sorted(features.items())
    return [
        option_row(option, ordered, option_features[i] if option_features else None, buckets)
        for i, option in enumerate(options)
    ]


def log_softmax(logits: FloatArray) -> FloatArray:
    """Exact log-softmax over the last axis; -inf entries (masked options) stay -inf."""
    # numpy's stubs type reductions with keepdims=True as Any: the annotations restore the array.
    top: FloatArray = np.max(logits, axis=-1, keepdims=True)
    shifted = logits - top
    totals: FloatArray = np.sum(np.exp(shifted), axis=-1, keepdims=True)
    return shifted - np.log(totals)


class HeadShape(Protocol):
    """What encoding needs of a head (`cohort.policy.HeadSpec` has it)."""

    @property
    def feature_buckets(self) -> int: ...

    @property
    def temperature(self) -> float: ...


CheckedDecision = tuple[
    tuple[str, ...], tuple[str, ...], Sequence[float], int, float, Sequence[Mapping[str, float]]
]
"""A recorded decision as `cohort.policy.check_recorded_decision` read it, so nothing reads it twice:
its options, its context feature names (sorted) and their values in the same order, the chosen
option's index, the log-probability it had when it was chosen, and each option's own features (empty
when the decision has none)."""


@dataclass(frozen=True)
class DecisionBatch:
    """Recorded decisions of one head, padded to dense arrays for vectorized scoring.

    `indices[d, o, k]`/`values[d, o, k]` are the sparse row of option `o` of decision `d` (padding:
    index 0 with value 0.0, which adds nothing); `option_mask[d, o]` is False for padding options;
    `chosen[d]` is the chosen option's index.
    """

    indices: Int64Array
    values: FloatArray
    option_mask: BoolArray
    chosen: Int64Array
    temperature: float

    def __len__(self) -> int:
        return int(self.chosen.shape[0])


def pad_rows(
    rows_per_decision: Sequence[Sequence[tuple[list[int], list[float]]]],
) -> tuple[Int64Array, FloatArray, BoolArray]:
    """Dense (indices, values, option_mask) arrays from each decision's option rows."""
    count = len(rows_per_decision)
    width = max((len(rows) for rows in rows_per_decision), default=0)
    depth = max((len(row[0]) for rows in rows_per_decision for row in rows), default=0)
    indices = np.zeros((count, width, depth), dtype=np.int64)
    values = np.zeros((count, width, depth), dtype=np.float64)
    mask = np.zeros((count, width), dtype=bool)
    for d, rows in enumerate(rows_per_decision):
        for o, (row_indices, row_values) in enumerate(rows):
            indices[d, o, : len(row_indices)] = row_indices
            values[d, o, : len(row_values)] = row_values
            mask[d, o] = True
    return indices, values, mask


@lru_cache(maxsize=4096)
def _context_layout(options: tuple[str, ...], names: tuple[str, ...], buckets: int) -> Int64Array:
    """int64[O, 1 + F]: each option's bias bucket, then its bucket for each context feature name.

    Recorded decisions repeat a few (options, feature names) combinations thousands of times, so a
    batch reuses these layouts instead of hashing every option row again.
    """
    return np.array(
        [
            [bucket(option + OPTION_SEPARATOR, buckets)]
            + [bucket(option + OPTION_SEPARATOR + name, buckets) for name in names]
            for option in options
        ],
        dtype=np.int64,
    )


def encode_checked(head: HeadShape, checked: Sequence[CheckedDecision]) -> DecisionBatch:
    """The `DecisionBatch` of decisions of `head` (anything with `feature_buckets` and `temperature`,
    such as `cohort.policy.HeadSpec`) that `cohort.policy.check_recorded_decision` has read (its
    `CheckedDecision`s), without reading the decisions again.

    Rows are exactly `option_rows`; decisions without per-option features take a cached layout
    (`_context_layout`) and are written group by group instead of row by row.
    """
    buckets = head.feature_buckets
    count = len(checked)
    # layout -> (decision positions, their value rows); id() keys: layouts are cached, shared arrays.
    by_layout: dict[int, tuple[Int64Array, list[int], list[list[float]]]] = {}
    ragged: list[tuple[int, Int64Array, FloatArray]] = []
    chosen: list[int] = []
    for i, (options, names, feature_values, chosen_index, _, option_features) in enumerate(checked):
        chosen.append(chosen_index)
        if option_features:
            rows = option_rows(
                options, dict(zip(names, feature_values, strict=True)), option_features, buckets
            )
            row_indices, row_values = pad_rows([rows])[:2]
            ragged.append((i, row_indices[0], row_values[0]))
        else:
            layout = _context_layout(options, names, buckets)
            group = by_layout.get(id(layout))
            if group is None:
                group = by_layout[id(layout)] = (layout, [], [])
            group[1].append(i)
            group[2].append([1.0, *feature_values])
    shapes = [layout.shape for layout, _, _ in by_layout.values()] + [rows.shape for _, rows, _ in ragged]
    width = max((shape[0] for shape in shapes), default=0)
    depth = max((shape[1] for shape in shapes), default=0)
    indices = np.zeros((count, width, depth), dtype=np.int64)
    values = np.zeros((count, width, depth), dtype=np.float64)
    mask = np.zeros((count, width), dtype=bool)
    for layout, positions, value_rows in by_layout.values():
        options_count, features_count = layout.shape
        # One layout for the whole batch is the common case: a slice is several times cheaper.
        where = slice(None) if len(positions) == count else np.array(positions, dtype=np.int64)
        indices[where, :options_count, :features_count] = layout
        values[where, :options_count, :features_count] = np.array(value_rows, dtype=np.float64)[:, None, :]
        mask[where, :options_count] = True
    for d, layout, row_values in ragged:
        options_count, features_count = layout.shape
        indices[d, :options_count, :features_count] = layout
        values[d, :options_count, :features_count] = row_values
        mask[d, :options_count] = True
    return DecisionBatch(
        indices=indices,
        values=values,
        option_mask=mask,
        chosen=np.array(chosen, dtype=np.int64),
        temperature=float(head.temperature),
    )


def logits_of(weights: FloatArray, batch: DecisionBatch) -> FloatArray:
    """float64[D, O] logits, masked options -inf."""
    logits = np.sum(weights[batch.indices] * batch.values, axis=-1) / batch.temperature
    return np.where(batch.option_mask, logits, -np.inf)


def log_probabilities(weights: FloatArray, batch: DecisionBatch) -> FloatArray:
    """float64[D, O] exact log-probabilities of every option under `weights`; masked options -inf."""
    if len(batch) == 0:
        return np.zeros(batch.option_mask.shape, dtype=np.float64)
    return log_softmax(logits_of(weights, batch))
