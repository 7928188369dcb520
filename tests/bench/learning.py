"""Learning proven, full settings: GRPO through the services on every toolbench family.

A uniform policy is trained by calling the services directly (collector → reward → trainer →
checkpoint), then evaluated against its starting version on the held-out queries with the same
queries and seeds. Prints the learning curve and how many trajectories it took.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from figures import Figure  # noqa: E402
from test_learning import toolbench_spec  # noqa: E402

from cohort.config import Settings  # noqa: E402
from cohort.event_loop import run_event_loop  # noqa: E402
from cohort.services.jobs.orchestration import TrainingLoop, TrainingServices, TrainingState  # noqa: E402
from cohort.services.suite import start_suite  # noqa: E402

ITERATIONS = 25
BATCH = 16


async def measure() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["all"], ephemeral_ports=True)
        try:
            services = TrainingServices.from_channels(suite.context.channels, with_budget=False)
            spec = toolbench_spec(
                iterations=ITERATIONS, train=400, heldout=100, batch_size=BATCH, families=()
            )
            loop = TrainingLoop(services, "learning-bench", spec)
            policy = await loop.start_policy()
            state = TrainingState(policy=policy, baseline=policy)
            started = time.perf_counter()
            print("  iteration  train success  reward  trajectories")
            for _ in range(ITERATIONS):
                report = await loop.run_iteration(state)
                print(
                    f"  {state.iteration:>9}  {report.success_rate:>13.1%}  {report.reward_mean:>6.3f}"
                    f"  {state.rollouts_completed:>12}"
                )
            seconds = time.perf_counter() - started
            await loop.save_checkpoint(state)
            result = await loop.evaluate(state.baseline, state.policy)
        finally:
            await suite.stop(0)
    print(
        f"  held-out: baseline {result.baseline.success_rate:.1%}"
        f" -> trained {result.candidate.success_rate:.1%}"
        f" ({result.candidate.query_count} queries); McNemar p = {result.mcnemar_p_value:.2g};"
        f" {state.rollouts_completed} training trajectories in {seconds:.1f} s"
    )
    return {
        "gain": result.candidate.success_rate - result.baseline.success_rate,
        "p": result.mcnemar_p_value,
    }


def figures() -> list[Figure]:
    measured = run_event_loop(measure())
    return [
        Figure(
            "held-out success gain, all toolbench families (points)", measured["gain"] * 100, "pts", 40, False
        ),
        Figure("  McNemar exact p-value vs the starting policy", measured["p"], "p", 0.01),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
