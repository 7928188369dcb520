"""Learning on toolbench through the services, with the product's defaults, over several seeds.

A uniform policy is trained by the job's own loop (`TrainingLoop`: collector → reward → trainer →
checkpoint), and evaluated against its starting version on held-out queries (other entities,
numbers and phrasings) after a given number of training trajectories. Every seed draws its own
train and held-out queries and its own rollout seeds.

    python tests/bench/learning.py                      # the figures, as `make bench` prints them
    python tests/bench/learning.py sweep --learning-rate 0.02,0.05,0.1 --batch-size 4,16
                                                        # a seed sweep of the settings given
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from figures import Figure  # noqa: E402
from test_learning import toolbench_spec  # noqa: E402

from cohort.api.jobs.v1 import jobs_pb2  # noqa: E402
from cohort.api.trainer.v1 import trainer_pb2  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.services.jobs.orchestration import TrainingLoop, TrainingServices, TrainingState  # noqa: E402
from cohort.services.jobs.spec import DEFAULT_BATCH_SIZE, DEFAULT_GROUP_SIZE  # noqa: E402
from cohort.services.suite import start_suite  # noqa: E402

SEEDS = (1, 2, 3, 4, 5)
TRAJECTORIES = 3200
EARLY_TRAJECTORIES = 1600
LONG_ITERATIONS = 100
TRAIN_QUERIES = 400
HELDOUT_QUERIES = 100
STEADY_WINDOW = 10
"""Training success is judged steady over the last this many iterations."""


@dataclass
class Run:
    """One seed's training: per-iteration training success, held-out success at given points."""

    seed: int
    success: list[float] = field(default_factory=list)
    strata: list[dict[str, tuple[int, int]]] = field(default_factory=list)
    updates: int = 0
    heldout: dict[int, float] = field(default_factory=dict)
    """Trajectories trained on -> held-out success of the policy at that point."""
    baseline: float = 0.0
    p_value: float = 1.0
    seconds: float = 0.0

    @property
    def steady_std(self) -> float:
        """Standard deviation of training success over the last `STEADY_WINDOW` iterations, in points."""
        return statistics.pstdev(self.success[-STEADY_WINDOW:]) * 100

    def stuck_strata(self, window: int = STEADY_WINDOW) -> list[str]:
        """Strata with no rollout solved in their last `window` iterations that drew them."""
        seen: dict[str, list[int]] = {}
        for iteration in self.strata:
            for stratum, (solved, _) in iteration.items():
                seen.setdefault(stratum, []).append(solved)
        return sorted(s for s, solved in seen.items() if len(solved) >= window and not any(solved[-window:]))


def spec_for(seed: int, iterations: int, **settings) -> jobs_pb2.JobSpec:
    """The toolbench job of `seed` with the product's defaults, except the `settings` given:
    `batch_size`, `learning_rate`, `inner_epochs`, `uniform_batches`, `epsilon` and `decay`
    (exploration), `avoid_repeats`."""
    spec = toolbench_spec(
        iterations=iterations, train=TRAIN_QUERIES, heldout=HELDOUT_QUERIES, seed=seed, families=()
    )
    spec.group_size = 0  # the product's defaults
    spec.batch_size = settings.get("batch_size", 0)
    grpo = {k: settings[k] for k in ("learning_rate", "inner_epochs") if k in settings}
    if grpo:
        spec.grpo.CopyFrom(trainer_pb2.GrpoConfig(**grpo))
    if settings.get("uniform_batches"):
        spec.dataset.batch_sampling = jobs_pb2.BATCH_SAMPLING_UNIFORM
    if settings.get("epsilon"):
        spec.exploration.CopyFrom(
            jobs_pb2.Exploration(epsilon=settings["epsilon"], decay_iterations=settings.get("decay", 0))
        )
    if settings.get("avoid_repeats"):
        spec.runtime.toolbench.avoid_repeating_failed_calls = True
    return spec


async def train(
    services: TrainingServices, spec: jobs_pb2.JobSpec, evaluate_at: set[int], *, echo: bool = False
) -> Run:
    """Runs `spec`'s iterations, evaluating once each count in `evaluate_at` is reached (a batch
    that does not divide it evaluates after the first iteration past it)."""
    loop = TrainingLoop(services, f"learning-bench-{spec.seed}-{time.monotonic_ns()}", spec)
    policy = await loop.start_policy()
    state = TrainingState(policy=policy, baseline=policy)
    run = Run(seed=spec.seed)
    started = time.perf_counter()
    for _ in range(spec.iterations):
        report = await loop.run_iteration(state)
        run.success.append(report.success_rate)
        run.strata.append(report.strata)
        run.updates += report.update.decisions > 0
        if echo:
            print(f"  {state.iteration:>9}  {report.success_rate:>13.1%}  {state.rollouts_completed:>12}")
        due = {point for point in evaluate_at if point <= state.rollouts_completed} - run.heldout.keys()
        if due:
            run.seconds += time.perf_counter() - started
            result = await loop.evaluate(state.baseline, state.policy, label=f"-{state.iteration}")
            started = time.perf_counter()
            for point in due:
                run.heldout[point] = result.candidate.success_rate
            run.baseline, run.p_value = result.baseline.success_rate, result.mcnemar_p_value
    run.seconds += time.perf_counter() - started
    return run


async def with_services(work):
    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["all"], ephemeral_ports=True)
        try:
            return await work(TrainingServices.from_channels(suite.context.channels, with_budget=False))
        finally:
            await suite.stop(0)


def per_iteration(spec: jobs_pb2.JobSpec) -> int:
    return (spec.group_size or DEFAULT_GROUP_SIZE) * (spec.batch_size or DEFAULT_BATCH_SIZE)


def iterations_for(trajectories: int, spec: jobs_pb2.JobSpec) -> int:
    """Iterations of `spec` to train on `trajectories` (rounded up)."""
    return -(-trajectories // per_iteration(spec))


async def measure(services: TrainingServices, seeds=SEEDS, **settings) -> list[Run]:
    """Each seed trained on `TRAJECTORIES`, evaluated after `EARLY_TRAJECTORIES` and at the end."""
    runs = []
    for seed in seeds:
        probe = spec_for(seed, 1, **settings)
        spec = spec_for(seed, iterations_for(TRAJECTORIES, probe), **settings)
        runs.append(await train(services, spec, {EARLY_TRAJECTORIES, TRAJECTORIES}))
    return runs


def summary(runs: list[Run]) -> str:
    final = [r.heldout[TRAJECTORIES] * 100 for r in runs]
    early = [r.heldout[EARLY_TRAJECTORIES] * 100 for r in runs]
    return (
        f"held-out@{TRAJECTORIES} mean {statistics.mean(final):5.1f} min {min(final):5.1f} | "
        f"@{EARLY_TRAJECTORIES} mean {statistics.mean(early):5.1f} min {min(early):5.1f} | "
        f"train std(last {STEADY_WINDOW}) max {max(r.steady_std for r in runs):4.1f} | "
        f"stuck {sum(len(r.stuck_strata()) for r in runs)} | "
        f"no-update iterations {sum(len(r.success) - r.updates for r in runs)} | "
        f"{statistics.mean(r.seconds for r in runs):5.1f} s/seed | per seed {[round(f) for f in final]}"
    )


def sweep(arguments: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="learning.py sweep")
    parser.add_argument("--learning-rate", default="0.05")
    parser.add_argument("--batch-size", default="4")
    parser.add_argument("--inner-epochs", default="4")
    parser.add_argument("--uniform-batches", action="store_true")
    parser.add_argument("--epsilon", type=float, default=0.0, help="exploration at iteration 0")
    parser.add_argument("--decay", type=int, default=0, help="iterations to decay exploration to 0")
    parser.add_argument("--avoid-repeats", action="store_true", help="no repeat of a just-failed call")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args(arguments)
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = itertools.product(
        [float(v) for v in args.learning_rate.split(",")],
        [int(v) for v in args.batch_size.split(",")],
        [int(v) for v in args.inner_epochs.split(",")],
    )

    async def go(services):
        for learning_rate, batch_size, inner_epochs in grid:
            settings = {
                "learning_rate": learning_rate,
                "batch_size": batch_size,
                "inner_epochs": inner_epochs,
            }
            settings.update(
                uniform_batches=args.uniform_batches,
                epsilon=args.epsilon,
                decay=args.decay,
                avoid_repeats=args.avoid_repeats,
            )
            runs = await measure(services, seeds, **settings)
            print(
                f"lr {learning_rate:<5} batch {batch_size:<3} epochs {inner_epochs:<2} | {summary(runs)}"
                f" | {' '.join(arguments)}",
                flush=True,
            )

    run_event_loop(with_services(go))


async def long_run(services: TrainingServices, seed: int = SEEDS[0]) -> Run:
    """`LONG_ITERATIONS` iterations of the default job, evaluated at the end."""
    spec = spec_for(seed, LONG_ITERATIONS)
    return await train(services, spec, {LONG_ITERATIONS * per_iteration(spec)})


async def demo_run(services: TrainingServices) -> tuple[Run, int]:
    """The job `make demo` runs (its spec file, budget left out), evaluated at its end."""
    from cohort.cli import DEMO_SPEC
    from cohort.cli.jobs import load_job_spec

    spec = load_job_spec(DEMO_SPEC).spec
    spec.ClearField("budget")
    total = spec.iterations * per_iteration(spec)
    return await train(services, spec, {total}), total


def figures() -> list[Figure]:
    async def go(services):
        return await measure(services), await long_run(services), await demo_run(services)

    runs, long, (demo, demo_trajectories) = run_event_loop(with_services(go))
    print(f"  {len(runs)} seeds, product defaults: {summary(runs)}")
    long_stuck = long.stuck_strata()
    long_heldout = next(iter(long.heldout.values()))
    print(
        f"  {LONG_ITERATIONS}-iteration run (seed {long.seed}): held-out {long_heldout:.1%},"
        f" strata stuck at 0% {long_stuck or 'none'},"
        f" iterations without an update {len(long.success) - long.updates} of {len(long.success)}"
    )
    print(
        f"  demo job: {demo_trajectories} trajectories in {demo.seconds:.1f} s of training,"
        f" held-out {demo.baseline:.1%} -> {demo.heldout[demo_trajectories]:.1%}"
    )
    final = [r.heldout[TRAJECTORIES] * 100 for r in runs]
    early = [r.heldout[EARLY_TRAJECTORIES] * 100 for r in runs]
    n = len(runs)
    return [
        Figure(
            f"held-out success after {TRAJECTORIES} trajectories, mean of {n} seeds",
            statistics.mean(final),
            "%",
            97,
            False,
        ),
        Figure(f"  the worst of the {n} seeds", min(final), "%", 93, False),
        Figure(
            f"held-out success after {EARLY_TRAJECTORIES} trajectories, mean",
            statistics.mean(early),
            "%",
            90,
            False,
        ),
        Figure(
            f"training success std over the last {STEADY_WINDOW} iterations, worst seed",
            max(r.steady_std for r in runs),
            "pts",
            4,
        ),
        Figure(
            "  McNemar exact p-value vs the starting policy, worst seed",
            max(r.p_value for r in runs),
            "p",
            0.01,
        ),
        Figure(f"strata stuck at 0% after a {LONG_ITERATIONS}-iteration run", len(long_stuck), "", 0),
        Figure(
            "the demo job's held-out success at its end",
            demo.heldout[demo_trajectories] * 100,
            "%",
            85,
            False,
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        sweep(sys.argv[2:])
    else:
        for figure in figures():
            print(figure.line())
