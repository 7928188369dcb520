"""One measured figure beside its target; every bench module returns a list of these."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: float
    lower_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    def line(self) -> str:
        sign = "<=" if self.lower_is_better else ">="
        verdict = "ok" if self.met else "MISSED"
        # Tiny figures (p-values) in scientific notation, so they do not print as 0.000.
        number = f"{self.value:>9.2e}" if 0 < abs(self.value) < 1e-3 else f"{self.value:>9.3f}"
        measured = f"{number} {self.unit:<4}"
        return f"{self.name:<58} {measured} target {sign} {self.target:g} {self.unit}  {verdict}"


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `samples`, nearest-rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of `run()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
