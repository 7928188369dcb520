"""The exploration schedule of a training job (`JobSpec.exploration`).

Training collections sample each decision from `(1 - ε) * pi + ε * uniform(options)` and record that
mixture, so GRPO's ratio stays exact (`cohort.learning.mixture_log_probabilities`). ε starts at
`epsilon` and may decay linearly to 0; evaluations never explore.
"""

from __future__ import annotations

from cohort.learning.exploration import check_exploration_rate
from cohort.platform.errors import InvalidArgument


def exploration_epsilon(epsilon: float, decay_iterations: int, iteration: int) -> float:
    """ε of the 0-based `iteration`: `epsilon`, falling linearly to 0 at `decay_iterations` (0 keeps
    it constant) and 0 from then on."""
    if epsilon <= 0.0 or (decay_iterations > 0 and iteration >= decay_iterations):
        return 0.0
    if decay_iterations <= 0:
        return epsilon
    return epsilon * (decay_iterations - max(iteration, 0)) / decay_iterations


def check_exploration(epsilon: float, decay_iterations: int, field: str) -> None:
    """`InvalidArgument` naming `<field>.epsilon` or `<field>.decay_iterations` when out of range."""
    check_exploration_rate(epsilon, f"{field}.epsilon")
    if decay_iterations < 0:
        raise InvalidArgument(
            f"{field}.decay_iterations", f"must be >= 0 (0: ε stays constant), got {decay_iterations}"
        )
