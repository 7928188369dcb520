"""`JobSpec` validation and defaults: every bad field is named; zero values take the documented defaults."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2 as jpb
from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform.config import Settings
from cohort.platform.errors import InvalidArgument
from cohort.services.jobs.spec import validate_new_job

SETTINGS = Settings(max_group_size=64)


def valid_job() -> jpb.Job:
    return jpb.Job(
        display_name="demo",
        spec=jpb.JobSpec(
            runtime=collector_pb2.RuntimeSpec(toolbench=collector_pb2.ToolbenchRuntime()),
            dataset=jpb.DatasetSpec(toolbench=jpb.ToolbenchQueries()),
            policy=jpb.PolicySource(new_policy=jpb.NewPolicy()),
            iterations=3,
        ),
    )


def _inline(job: jpb.Job, train: list[str], heldout: list[str] = ()) -> None:
    job.spec.dataset.inline.train.extend(collector_pb2.Query(query_id=q, text=q) for q in train)
    job.spec.dataset.inline.heldout.extend(collector_pb2.Query(query_id=q, text=q) for q in heldout)


def _python_runtime(job: jpb.Job, entry_point: str = "agents.mine:run") -> None:
    job.spec.runtime.python.entry_point = entry_point


BAD_SPECS = {
    "missing spec": (lambda j: j.ClearField("spec"), "job.spec"),
    "bad job id": (lambda j: setattr(j, "job_id", "has space"), "job.job_id"),
    "long display name": (lambda j: setattr(j, "display_name", "x" * 201), "job.display_name"),
    "group size negative": (lambda j: setattr(j.spec, "group_size", -1), "job.spec.group_size"),
    "group size too big": (lambda j: setattr(j.spec, "group_size", 65), "job.spec.group_size"),
    "iterations missing": (lambda j: setattr(j.spec, "iterations", 0), "job.spec.iterations"),
    "iterations too many": (lambda j: setattr(j.spec, "iterations", 100_001), "job.spec.iterations"),
    "iterations negative": (lambda j: setattr(j.spec, "iterations", -3), "job.spec.iterations"),
    "batch size negative": (lambda j: setattr(j.spec, "batch_size", -1), "job.spec.batch_size"),
    "max attempts negative": (lambda j: setattr(j.spec, "max_attempts", -1), "job.spec.max_attempts"),
    "max attempts too many": (lambda j: setattr(j.spec, "max_attempts", 101), "job.spec.max_attempts"),
    "dataset missing": (lambda j: j.spec.ClearField("dataset"), "job.spec.dataset"),
    "dataset without source": (
        lambda j: (j.spec.dataset.ClearField("toolbench"), setattr(j.spec.dataset, "heldout_fraction", 0.3)),
        "job.spec.dataset",
    ),
    "inline train empty": (
        lambda j: j.spec.dataset.inline.heldout.add(query_id="h", text="h"),
        "job.spec.dataset.inline.train",
    ),
    "inline query without text": (
        lambda j: j.spec.dataset.inline.train.add(query_id="q"),
        "job.spec.dataset.inline.train[0].text",
    ),
    "inline duplicate query id": (
        lambda j: _inline(j, ["a"], ["a"]),
        "job.spec.dataset.inline.heldout[0].query_id",
    ),
    "toolbench train count negative": (
        lambda j: setattr(j.spec.dataset.toolbench, "train_count", -1),
        "job.spec.dataset.toolbench.train_count",
    ),
    "toolbench heldout count negative": (
        lambda j: setattr(j.spec.dataset.toolbench, "heldout_count", -5),
        "job.spec.dataset.toolbench.heldout_count",
    ),
    "heldout fraction one": (
        lambda j: setattr(j.spec.dataset, "heldout_fraction", 1.0),
        "job.spec.dataset.heldout_fraction",
    ),
    "heldout fraction negative": (
        lambda j: setattr(j.spec.dataset, "heldout_fraction", -0.1),
        "job.spec.dataset.heldout_fraction",
    ),
    "heldout fraction nan": (
        lambda j: setattr(j.spec.dataset, "heldout_fraction", math.nan),
        "job.spec.dataset.heldout_fraction",
    ),
    "policy missing": (lambda j: j.spec.ClearField("policy"), "job.spec.policy"),
    "existing policy without id": (
        lambda j: j.spec.policy.existing.SetInParent(),
        "job.spec.policy.existing.policy_id",
    ),
    "new policy without heads for a python agent": (
        lambda j: _python_runtime(j),
        "job.spec.policy.new_policy.heads",
    ),
    "head without name": (
        lambda j: j.spec.policy.new_policy.heads.add(options=["a"]),
        "job.spec.policy.new_policy.heads[0].name",
    ),
    "duplicate head": (
        lambda j: j.spec.policy.new_policy.heads.extend(
            [trainer_pb2.DecisionHead(name="h"), trainer_pb2.DecisionHead(name="h")]
        ),
        "job.spec.policy.new_policy.heads[1].name",
    ),
    "head buckets not a power of two": (
        lambda j: j.spec.policy.new_policy.heads.add(name="h", feature_buckets=100),
        "job.spec.policy.new_policy.heads[0].feature_buckets",
    ),
    "head temperature negative": (
        lambda j: j.spec.policy.new_policy.heads.add(name="h", temperature=-1),
        "job.spec.policy.new_policy.heads[0].temperature",
    ),
    "runtime missing": (lambda j: j.spec.ClearField("runtime"), "job.spec.runtime"),
    "python entry point malformed": (
        lambda j: (_python_runtime(j, "no-colon"), j.spec.policy.new_policy.heads.add(name="h")),
        "job.spec.runtime.python.entry_point",
    ),
    "grpc address malformed": (
        lambda j: (
            setattr(j.spec.runtime.grpc, "address", "nohost"),
            j.spec.policy.new_policy.heads.add(name="h"),
        ),
        "job.spec.runtime.grpc.address",
    ),
    "toolbench tokens negative": (
        lambda j: setattr(j.spec.runtime.toolbench, "simulated_tokens_per_step", -1),
        "job.spec.runtime.toolbench.simulated_tokens_per_step",
    ),
    "checkpoint interval negative": (
        lambda j: setattr(j.spec, "checkpoint_interval", -1),
        "job.spec.checkpoint_interval",
    ),
    "evaluation interval negative": (
        lambda j: setattr(j.spec, "evaluation_interval", -2),
        "job.spec.evaluation_interval",
    ),
    "budget limit negative": (
        lambda j: setattr(j.spec.budget, "limit_micro_usd", -1),
        "job.spec.budget.limit_micro_usd",
    ),
    "rollout timeout zero": (
        lambda j: j.spec.rollout_timeout.CopyFrom(Duration()),
        "job.spec.rollout_timeout",
    ),
    "rollout timeout negative": (
        lambda j: j.spec.rollout_timeout.CopyFrom(Duration(seconds=-1)),
        "job.spec.rollout_timeout",
    ),
    "max concurrency negative": (
        lambda j: setattr(j.spec, "max_concurrency", -1),
        "job.spec.max_concurrency",
    ),
    "max steps negative": (lambda j: setattr(j.spec, "max_steps", -1), "job.spec.max_steps"),
    "failure policy unknown": (lambda j: setattr(j.spec, "failure_policy", 99), "job.spec.failure_policy"),
    "grpo clip negative": (
        lambda j: setattr(j.spec.grpo, "clip_epsilon_low", -0.5),
        "job.spec.grpo.clip_epsilon_low",
    ),
    "grpo learning rate nan": (
        lambda j: setattr(j.spec.grpo, "learning_rate", math.nan),
        "job.spec.grpo.learning_rate",
    ),
    "grpo adam beta one": (lambda j: setattr(j.spec.grpo, "adam_beta1", 1.0), "job.spec.grpo.adam_beta1"),
    # Finite values that pass a NaN check but overflow an update into NaN weights, and negative
    # seeds that fail deep inside the run: all refused at CreateJob.
    "grpo learning rate huge": (
        lambda j: setattr(j.spec.grpo, "learning_rate", 1e300),
        "job.spec.grpo.learning_rate",
    ),
    "grpo kl huge": (lambda j: setattr(j.spec.grpo, "kl_beta", 1e300), "job.spec.grpo.kl_beta"),
    "grpo entropy huge": (
        lambda j: setattr(j.spec.grpo, "entropy_coefficient", 1e4),
        "job.spec.grpo.entropy_coefficient",
    ),
    "grpo max grad norm huge": (
        lambda j: setattr(j.spec.grpo, "max_grad_norm", 1e300),
        "job.spec.grpo.max_grad_norm",
    ),
    "grpo seed negative": (lambda j: setattr(j.spec.grpo, "seed", -1), "job.spec.grpo.seed"),
    "seed negative": (lambda j: setattr(j.spec, "seed", -7), "job.spec.seed"),
    "toolbench seed negative": (
        lambda j: setattr(j.spec.dataset.toolbench, "seed", -1),
        "job.spec.dataset.toolbench.seed",
    ),
    "advantage gamma above one": (
        lambda j: setattr(j.spec.advantage, "gamma", 1.5),
        "job.spec.advantage.gamma",
    ),
    "reward step budget negative": (
        lambda j: setattr(j.spec.reward, "step_budget", -1),
        "job.spec.reward.step_budget",
    ),
    "retention keep best negative": (
        lambda j: setattr(j.spec.retention, "keep_best", -1),
        "job.spec.retention.keep_best",
    ),
}


def bad_job(case: str) -> jpb.Job:
    job = valid_job()
    mutate, _ = BAD_SPECS[case]
    mutate(job)
    return job


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_every_bad_field_is_named(case):
    job = bad_job(case)
    before = job.SerializeToString()
    with pytest.raises(InvalidArgument) as failure:
        validate_new_job(job, SETTINGS)
    assert failure.value.status_code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.field == BAD_SPECS[case][1], failure.value.message
    assert job.SerializeToString() == before  # the request is never modified


def test_defaults_are_filled_in():
    new = validate_new_job(valid_job(), SETTINGS)
    spec = new.spec
    assert (spec.group_size, spec.batch_size) == (8, 16)
    assert (spec.checkpoint_interval, spec.evaluation_interval) == (10, 10)
    assert spec.dataset.heldout_fraction == pytest.approx(0.2)
    assert (spec.dataset.toolbench.train_count, spec.dataset.toolbench.heldout_count) == (200, 50)
    assert spec.rollout_timeout.seconds == 60 and spec.max_concurrency == 16
    assert spec.failure_policy == 1  # FAILURE_POLICY_SCORE_AS_FAILURE
    assert new.job_id == "" and new.display_name == "demo"


def test_max_attempts_defaults_to_three_and_keeps_an_explicit_value():
    assert validate_new_job(valid_job(), SETTINGS).spec.max_attempts == 3
    job = valid_job()
    job.spec.max_attempts = 100
    assert validate_new_job(job, SETTINGS).spec.max_attempts == 100


def test_explicit_values_are_kept():
    job = valid_job()
    job.job_id = "job-1"
    job.spec.group_size = 64
    job.spec.batch_size = 1
    job.spec.iterations = 100_000
    job.spec.dataset.heldout_fraction = 0.5
    job.spec.rollout_timeout.CopyFrom(Duration(nanos=1))
    _python_runtime(job)
    job.spec.policy.new_policy.heads.add(name="tool", options=["a", "b"], feature_buckets=16)
    spec = validate_new_job(job, SETTINGS).spec
    assert (spec.group_size, spec.batch_size, spec.iterations) == (64, 1, 100_000)
    assert spec.dataset.heldout_fraction == 0.5 and spec.rollout_timeout.nanos == 1


def test_group_size_bound_follows_settings():
    job = valid_job()
    job.spec.group_size = 65
    assert validate_new_job(job, Settings(max_group_size=128)).spec.group_size == 65


def test_the_bad_value_and_the_allowed_range_are_in_the_message():
    job = bad_job("grpo learning rate huge")
    with pytest.raises(InvalidArgument) as failure:
        validate_new_job(job, SETTINGS)
    assert "(0, 10]" in failure.value.description and "1e+300" in failure.value.description
    job = valid_job()
    job.spec.seed = 0
    job.spec.grpo.learning_rate = 10
    job.spec.grpo.kl_beta = 1000
    assert validate_new_job(job, SETTINGS).spec.grpo.kl_beta == 1000  # the bounds themselves are fine
