"""Stratified batches: proportional places per stratum, distinct queries, reproducible draws."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from cohort.api.jobs.v1 import jobs_pb2
from cohort.sdk.toolbench import generate_queries
from cohort.services.jobs.orchestration import TrainingLoop
from cohort.services.jobs.sampling import stratified_batch, stratum_quotas, uniform_batch


def rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


@pytest.mark.parametrize(
    ("sizes", "size"),
    [([10, 10, 10], 7), ([57, 57, 19, 19, 19, 57, 57, 57, 58], 16), ([1, 100], 4), ([3, 2], 50), ([5], 3)],
)
def test_quotas_are_proportional_within_one_and_sum_to_the_batch(sizes, size):
    for iteration in range(50):
        quotas = stratum_quotas(sizes, size, rng(7, iteration))
        assert sum(quotas) == min(size, sum(sizes))
        for quota, stratum_size in zip(quotas, sizes, strict=True):
            exact = stratum_size * min(size, sum(sizes)) / sum(sizes)
            assert quota <= stratum_size
            assert abs(quota - exact) < 1 or quota == stratum_size


def test_remainder_places_rotate_so_each_stratum_gets_its_share_over_iterations():
    sizes = [10, 10, 10, 10, 10, 10, 10]  # 7 equal strata, 3 places: who gets them is chance
    totals = np.zeros(len(sizes))
    for iteration in range(700):
        totals += stratum_quotas(sizes, 3, rng(1, iteration))
    assert np.all(np.abs(totals / 700 - 3 / 7) < 0.08), totals / 700


def test_a_stratified_batch_holds_distinct_queries_in_proportion():
    strata = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    for iteration in range(30):
        batch = stratified_batch(strata, 10, rng(3, iteration))
        assert len(batch) == len(set(batch)) == 10
        counts = collections.Counter(strata[i] for i in batch)
        assert counts == {"a": 4, "b": 4, "c": 2}


def test_the_same_generator_state_draws_the_same_batch_and_another_draws_another():
    strata = [str(i % 9) for i in range(400)]
    assert stratified_batch(strata, 16, rng(5, 2)) == stratified_batch(strata, 16, rng(5, 2))
    assert stratified_batch(strata, 16, rng(5, 2)) != stratified_batch(strata, 16, rng(5, 3))


def test_a_batch_larger_than_the_split_takes_every_query_once():
    strata = ["x", "y", "y"]
    assert sorted(stratified_batch(strata, 10, rng(1))) == [0, 1, 2]
    assert sorted(uniform_batch(3, 10, rng(1))) == [0, 1, 2]


def test_queries_without_strata_form_one_stratum():
    batch = stratified_batch([""] * 50, 8, rng(9))
    assert len(set(batch)) == 8 and all(0 <= i < 50 for i in batch)


def _loop(sampling: int) -> TrainingLoop:
    from cohort.api.collector.v1 import collector_pb2

    spec = jobs_pb2.JobSpec(
        runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
        dataset=jobs_pb2.DatasetSpec(
            toolbench=jobs_pb2.ToolbenchQueries(train_count=400, heldout_count=10, seed=3),
            batch_sampling=sampling,
        ),
        iterations=10,
        batch_size=16,
        seed=3,
    )
    return TrainingLoop(services=None, job_id="sampling", spec=spec)  # type: ignore[arg-type]


def test_toolbench_queries_declare_their_intent_as_stratum():
    queries = generate_queries("train", 30, seed=1)
    assert all(q.stratum and q.stratum in q.payload_json for q in queries)


def test_a_toolbench_job_draws_every_intent_each_iteration_by_default():
    loop = _loop(jobs_pb2.BATCH_SAMPLING_UNSPECIFIED)
    strata = collections.Counter(q.stratum for q in loop.dataset.train)
    for iteration in range(20):
        drawn = collections.Counter(q.stratum for _, q in loop.iteration_queries(iteration))
        assert set(drawn) == set(strata)  # 9 intents, 16 places: every intent, every iteration
        for stratum, count in drawn.items():
            assert abs(count - 16 * strata[stratum] / 400) < 1


def test_uniform_sampling_ignores_strata_and_reproduces_earlier_batches():
    loop = _loop(jobs_pb2.BATCH_SAMPLING_UNIFORM)
    # Jobs of earlier versions drew their batches exactly like this.
    expected = np.random.default_rng([3, 4]).choice(400, size=16, replace=False)
    assert [i for i, _ in loop.iteration_queries(4)] == [int(i) for i in expected]
    sizes = [len({q.stratum for _, q in loop.iteration_queries(i)}) for i in range(30)]
    assert min(sizes) < 9  # some uniform batch misses an intent; stratified ones never do
