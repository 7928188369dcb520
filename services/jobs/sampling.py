"""Which training queries an iteration's batch holds: stratified or uniform draws, reproducibly.

Stratified: each stratum (a query's family, intent or other label) gets `size * n_s / N` places,
rounded by largest remainder with ties broken at random, and its places are filled at random from
its queries. The batch's make-up is then the same every iteration up to one place per stratum, so
an iteration's success rate tracks learning rather than the family mix a uniform draw happened to
take (once some families are solved and others are not, that mix is nearly all of the swing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def uniform_batch(count: int, size: int, rng: np.random.Generator) -> list[int]:
    """`size` distinct indices of `count` queries, uniformly at random."""
    return [int(i) for i in rng.choice(count, size=min(size, count), replace=False)]


def stratum_quotas(sizes: Sequence[int], size: int, rng: np.random.Generator) -> list[int]:
    """Places per stratum for a batch of `size`: proportional to `sizes`, by largest remainder with
    random tie-breaking, never more than a stratum holds; the quotas sum to min(size, sum(sizes))."""
    total = sum(sizes)
    size = min(size, total)
    exact = np.array(sizes, dtype=np.float64) * size / total
    quotas = np.floor(exact).astype(np.int64)
    remainders = exact - quotas
    # Sorting by (remainder, random key) breaks ties differently every iteration.
    order = np.lexsort((rng.random(len(sizes)), -remainders))
    capacity = np.array(sizes) - quotas
    for stratum in order:
        if quotas.sum() >= size:
            break
        if capacity[stratum] > 0:
            quotas[stratum] += 1
            capacity[stratum] -= 1
    return [int(q) for q in quotas]


def stratified_batch(strata: Sequence[str], size: int, rng: np.random.Generator) -> list[int]:
    """`size` distinct indices into `strata` (one label per query), drawn across strata."""
    members: dict[str, list[int]] = {}
    for index, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(index)
    groups = list(members.values())
    quotas = stratum_quotas([len(g) for g in groups], size, rng)
    batch: list[int] = []
    for group, quota in zip(groups, quotas, strict=True):
        if quota:
            batch.extend(int(group[i]) for i in rng.choice(len(group), size=quota, replace=False))
    return batch
