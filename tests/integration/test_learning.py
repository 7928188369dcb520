"""Learning proven: GRPO through the services turns a uniform policy into one that solves toolbench.

The loop calls the services directly (collector → reward → trainer → checkpoint) with fast settings;
`make bench ARGS=learning` runs the same with full settings and prints the learning curve.
"""

from __future__ import annotations

import numpy as np
import pytest

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.services.jobs.orchestration import TrainingLoop, TrainingServices, TrainingState
from cohort.services.suite import start_suite

pytestmark = pytest.mark.timeout(300)


FAST_FAMILIES = ("arithmetic", "kb_fact", "text", "verified_calc")
"""Fast settings: four families (one to three tool calls each) learn in a few hundred rollouts."""


def toolbench_spec(
    *,
    iterations: int,
    train: int = 160,
    heldout: int = 60,
    seed: int = 11,
    batch_size: int = 12,
    families: tuple[str, ...] = FAST_FAMILIES,
) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        runtime=collector_pb2.RuntimeSpec(
            toolbench=collector_pb2.ToolbenchRuntime(), agent=trajectory_pb2.AgentRef(name="toolbench-agent")
        ),
        dataset=jobs_pb2.DatasetSpec(
            toolbench=jobs_pb2.ToolbenchQueries(
                train_count=train, heldout_count=heldout, seed=seed, task_families=families
            )
        ),
        policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy(display_name="learning test")),
        group_size=8,
        batch_size=batch_size,
        iterations=iterations,
        seed=seed,
    )


@pytest.fixture
async def services(tmp_path):
    suite = await start_suite(Settings(data_dir=tmp_path), ["all"], ephemeral_ports=True)
    try:
        yield TrainingServices.from_channels(suite.context.channels, with_budget=False)
    finally:
        await suite.stop(0)


async def train(loop: TrainingLoop, state: TrainingState, iterations: int) -> None:
    for _ in range(iterations):
        await loop.run_iteration(state)


async def test_grpo_raises_heldout_success_by_40_points_with_significance(services):
    spec = toolbench_spec(iterations=8)
    loop = TrainingLoop(services, "learning-test", spec)
    policy = await loop.start_policy()
    state = TrainingState(policy=policy, baseline=policy)
    await train(loop, state, spec.iterations)
    assert state.policy.version > policy.version
    checkpoint = await loop.save_checkpoint(state)
    assert checkpoint.policy_version == state.policy.version

    result = await loop.evaluate(state.baseline, state.policy)
    gain = result.candidate.success_rate - result.baseline.success_rate
    assert result.baseline.success_rate <= 0.25, "the uniform starting policy should rarely succeed"
    assert gain >= 0.40, f"held-out success rose by only {gain:.1%}"
    assert result.mcnemar_p_value < 0.01
    assert result.success_rate_difference_ci_low > 0


async def test_stop_and_resume_from_a_checkpoint_equals_an_uninterrupted_run(services):
    spec = toolbench_spec(iterations=4, train=40, heldout=10)

    straight = TrainingLoop(services, "uninterrupted", spec)
    policy = await straight.start_policy()
    uninterrupted = TrainingState(policy=policy, baseline=policy)
    await train(straight, uninterrupted, 4)

    first = TrainingLoop(services, "interrupted", spec)
    policy = await first.start_policy()
    interrupted = TrainingState(policy=policy, baseline=policy)
    await train(first, interrupted, 2)
    await first.save_checkpoint(interrupted)

    second = TrainingLoop(services, "interrupted", spec, attempt=1)
    restored, _ = await second.restore(attempt=1)
    assert restored.iteration == 2
    await train(second, restored, 2)

    async def weights(ref):
        response = await services.trainer.GetPolicy(
            trainer_pb2.GetPolicyRequest(
                policy_id=ref.policy_id, version=ref.version, include_parameters=True
            )
        )
        return {p.head: np.array(p.weights) for p in response.policy.parameters}

    a, b = await weights(uninterrupted.policy), await weights(restored.policy)
    assert a.keys() == b.keys()
    for head in a:
        assert np.array_equal(a[head], b[head]), f"head {head} differs after resume"
    assert uninterrupted.optimizer.step == restored.optimizer.step
    for first_moment, second_moment in zip(
        uninterrupted.optimizer.first_moments, restored.optimizer.first_moments, strict=True
    ):
        assert list(first_moment.weights) == list(second_moment.weights)
    for first_moment, second_moment in zip(
        uninterrupted.optimizer.second_moments, restored.optimizer.second_moments, strict=True
    ):
        assert list(first_moment.weights) == list(second_moment.weights)
    assert uninterrupted.reward_history == restored.reward_history
