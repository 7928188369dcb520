"""Validating a `JobSpec` and filling in its defaults, before anything is stored.

`normalize_job_spec` checks every field and raises `InvalidArgument` naming the first bad one by its
full path (`job.spec.group_size`, `job.spec.dataset.inline.train`, ...). It returns a copy with the
zero values replaced by the defaults the proto documents, which is what is stored and what the
runner reads, so a job keeps the defaults it was created under.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from google.protobuf.duration_pb2 import Duration

from cohort.api.budget.v1 import budget_pb2
from cohort.api.checkpoint.v1 import checkpoint_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.reward.v1 import reward_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.config import Settings
from cohort.platform.errors import InvalidArgument
from cohort.sdk import toolbench
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.jobs.exploration import check_exploration
from cohort.services.jobs.health import normalize_collapse_detection
from cohort.services.trainer.convert import grpo_settings_from_proto

DEFAULT_GROUP_SIZE = 8
DEFAULT_BATCH_SIZE = 16  # from the seed sweep in the README's "Default settings"
MAX_ITERATIONS = 100_000
DEFAULT_HELDOUT_FRACTION = 0.2
DEFAULT_TOOLBENCH_TRAIN_COUNT = 200
DEFAULT_TOOLBENCH_HELDOUT_COUNT = 50
MAX_TOOLBENCH_COUNT = 1_000_000
DEFAULT_CHECKPOINT_INTERVAL = 10
DEFAULT_EVALUATION_INTERVAL = 10
DEFAULT_ROLLOUT_TIMEOUT_SECONDS = 60
DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS = 100
MAX_DISPLAY_NAME_LENGTH = 200
MAX_ROLLOUT_CEILING = 10**12
"""Per-rollout token or micro-USD ceiling: times every rollout of a job it must stay inside int64."""
EVALUATION_ROLLOUTS_PER_QUERY = 2
"""Rollouts per held-out query and policy at each evaluation (the baseline and the candidate each)."""
MIN_FEATURE_BUCKETS = 16
MAX_FEATURE_BUCKETS = 2**22

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENTRY_POINT_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

SPEC = "job.spec"


@dataclass(frozen=True)
class NewJob:
    """A validated `CreateJob` request: what gets stored."""

    job_id: str
    """Empty when the caller left it to the job manager."""
    display_name: str
    spec: jobs_pb2.JobSpec


def validate_new_job(job: jobs_pb2.Job, settings: Settings) -> NewJob:
    """Checks the request's `job` (id, name, spec); output-only fields are ignored."""
    if job.job_id and not JOB_ID_PATTERN.fullmatch(job.job_id):
        raise InvalidArgument(
            "job.job_id", "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if len(job.display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument("job.display_name", f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if not job.HasField("spec"):
        raise InvalidArgument(SPEC, "is required")
    return NewJob(job.job_id, job.display_name, normalize_job_spec(job.spec, settings))


def normalize_job_spec(spec: jobs_pb2.JobSpec, settings: Settings) -> jobs_pb2.JobSpec:
    """A validated copy of `spec` with every zero value that has a default replaced by it."""
    result = jobs_pb2.JobSpec()
    result.CopyFrom(spec)

    _check_runtime(result)
    _check_dataset(result.dataset, has_field=result.HasField("dataset"))
    _check_policy(result)

    if result.group_size == 0:
        result.group_size = DEFAULT_GROUP_SIZE
    elif not 1 <= result.group_size <= settings.max_group_size:
        raise InvalidArgument(
            f"{SPEC}.group_size", f"must be between 1 and {settings.max_group_size}, got {result.group_size}"
        )
    if result.iterations == 0:
        raise InvalidArgument(f"{SPEC}.iterations", "is required (1 to 100000)")
    if not 1 <= result.iterations <= MAX_ITERATIONS:
        raise InvalidArgument(
            f"{SPEC}.iterations", f"must be between 1 and {MAX_ITERATIONS}, got {result.iterations}"
        )
    if result.batch_size == 0:
        result.batch_size = DEFAULT_BATCH_SIZE
    elif result.batch_size < 1:
        raise InvalidArgument(f"{SPEC}.batch_size", f"must be >= 1, got {result.batch_size}")

    for name, default in (
        ("checkpoint_interval", DEFAULT_CHECKPOINT_INTERVAL),
        ("evaluation_interval", DEFAULT_EVALUATION_INTERVAL),
    ):
        value = getattr(result, name)
        if value == 0:
            setattr(result, name, default)
        elif value < 1:
            raise InvalidArgument(f"{SPEC}.{name}", f"must be >= 1 (0 means {default}), got {value}")

    if result.budget.limit_micro_usd < 0:
        raise InvalidArgument(
            f"{SPEC}.budget.limit_micro_usd", f"must be >= 0, got {result.budget.limit_micro_usd}"
        )
    _check_rollout_ceilings(result.budget)
    if result.HasField("rollout_timeout"):
        _check_duration(result.rollout_timeout, f"{SPEC}.rollout_timeout", positive=True)
    else:
        result.rollout_timeout.CopyFrom(Duration(seconds=DEFAULT_ROLLOUT_TIMEOUT_SECONDS))
    if result.max_concurrency == 0:
        result.max_concurrency = DEFAULT_MAX_CONCURRENCY
    elif result.max_concurrency < 0:
        raise InvalidArgument(f"{SPEC}.max_concurrency", f"must be >= 0, got {result.max_concurrency}")
    if result.max_steps < 0:
        raise InvalidArgument(f"{SPEC}.max_steps", f"must be >= 0, got {result.max_steps}")
    if result.max_attempts == 0:
        result.max_attempts = DEFAULT_MAX_ATTEMPTS
    elif not 1 <= result.max_attempts <= MAX_ATTEMPTS:
        raise InvalidArgument(
            f"{SPEC}.max_attempts",
            f"must be between 1 and {MAX_ATTEMPTS} (0 means 3), got {result.max_attempts}",
        )
    if result.seed < 0:
        raise InvalidArgument(f"{SPEC}.seed", f"must be >= 0, got {result.seed}")
    check_exploration(result.exploration.epsilon, result.exploration.decay_iterations, f"{SPEC}.exploration")
    normalize_collapse_detection(result.collapse_detection, f"{SPEC}.collapse_detection")

    if result.failure_policy not in reward_pb2.FailurePolicy.values():
        raise InvalidArgument(f"{SPEC}.failure_policy", f"unknown value {result.failure_policy}")
    if result.failure_policy == reward_pb2.FAILURE_POLICY_UNSPECIFIED:
        result.failure_policy = reward_pb2.FAILURE_POLICY_SCORE_AS_FAILURE

    _check_grpo(result)
    _check_reward(result)
    _check_retention(result.retention)
    return result


def _check_rollout_ceilings(budget: jobs_pb2.BudgetSpec) -> None:
    for name in ("max_rollout_tokens", "max_rollout_cost_micro_usd"):
        value = getattr(budget, name)
        if not 0 <= value <= MAX_ROLLOUT_CEILING:
            raise InvalidArgument(f"{SPEC}.budget.{name}", f"must be between 0 and {MAX_ROLLOUT_CEILING}")
    if budget.max_rollout_tokens and not budget.pricing_model:
        raise InvalidArgument(
            f"{SPEC}.budget.pricing_model", "is required with max_rollout_tokens: it prices the tokens"
        )


def _check_duration(value: Duration, field: str, *, positive: bool) -> None:
    if value.seconds < 0 or value.nanos < 0 or value.nanos >= 1_000_000_000:
        raise InvalidArgument(field, "must be a valid, non-negative duration")
    if positive and value.seconds == 0 and value.nanos == 0:
        raise InvalidArgument(field, "must be > 0 when set")


def _check_runtime(spec: jobs_pb2.JobSpec) -> None:
    field = f"{SPEC}.runtime"
    kind = spec.runtime.WhichOneof("kind") if spec.HasField("runtime") else None
    if kind is None:
        raise InvalidArgument(field, "is required: set one of python, grpc or toolbench")
    if kind == "python":
        if not ENTRY_POINT_PATTERN.fullmatch(spec.runtime.python.entry_point):
            raise InvalidArgument(f"{field}.python.entry_point", "must be 'package.module:function'")
    elif kind == "grpc":
        host, sep, port = spec.runtime.grpc.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise InvalidArgument(f"{field}.grpc.address", "must be host:port")
    else:
        toolbench = spec.runtime.toolbench
        if toolbench.simulated_tokens_per_step < 0:
            raise InvalidArgument(f"{field}.toolbench.simulated_tokens_per_step", "must be >= 0")
        if toolbench.HasField("simulated_step_latency"):
            _check_duration(
                toolbench.simulated_step_latency, f"{field}.toolbench.simulated_step_latency", positive=False
            )


def _check_queries(queries, field: str, seen: set[str]) -> None:
    for i, query in enumerate(queries):
        if not query.text:
            raise InvalidArgument(f"{field}[{i}].text", "is required")
        if query.query_id:
            if query.query_id in seen:
                raise InvalidArgument(f"{field}[{i}].query_id", f"{query.query_id!r} appears twice")
            seen.add(query.query_id)


def _check_dataset(dataset: jobs_pb2.DatasetSpec, *, has_field: bool) -> None:
    field = f"{SPEC}.dataset"
    source = dataset.WhichOneof("source") if has_field else None
    if source is None:
        raise InvalidArgument(field, "is required: set inline or toolbench")
    if source == "inline":
        if not dataset.inline.train:
            raise InvalidArgument(f"{field}.inline.train", "must have at least one query")
        seen: set[str] = set()
        _check_queries(dataset.inline.train, f"{field}.inline.train", seen)
        _check_queries(dataset.inline.heldout, f"{field}.inline.heldout", seen)
    else:
        toolbench = dataset.toolbench
        for name, default in (
            ("train_count", DEFAULT_TOOLBENCH_TRAIN_COUNT),
            ("heldout_count", DEFAULT_TOOLBENCH_HELDOUT_COUNT),
        ):
            value = getattr(toolbench, name)
            if value == 0:
                setattr(toolbench, name, default)
            elif not 1 <= value <= MAX_TOOLBENCH_COUNT:
                raise InvalidArgument(
                    f"{field}.toolbench.{name}",
                    f"must be between 1 and {MAX_TOOLBENCH_COUNT} (0 means {default}), got {value}",
                )
        if toolbench.seed < 0:
            raise InvalidArgument(f"{field}.toolbench.seed", f"must be >= 0, got {toolbench.seed}")
    if dataset.batch_sampling not in jobs_pb2.BatchSampling.values():
        raise InvalidArgument(
            f"{field}.batch_sampling", f"{dataset.batch_sampling} is not a BatchSampling value"
        )
    fraction = dataset.heldout_fraction
    if fraction == 0:
        dataset.heldout_fraction = DEFAULT_HELDOUT_FRACTION
    elif not 0 < fraction < 1:  # NaN fails too
        raise InvalidArgument(
            f"{field}.heldout_fraction", f"must be between 0 and 1 (exclusive), got {fraction}"
        )


def _check_policy(spec: jobs_pb2.JobSpec) -> None:
    field = f"{SPEC}.policy"
    source = spec.policy.WhichOneof("source") if spec.HasField("policy") else None
    if source is None:
        raise InvalidArgument(field, "is required: set existing or new_policy")
    if source == "existing":
        if not spec.policy.existing.policy_id:
            raise InvalidArgument(f"{field}.existing.policy_id", "is required")
        if spec.policy.existing.version < 0:
            raise InvalidArgument(f"{field}.existing.version", "must be >= 0 (0 means the latest)")
        return
    heads = spec.policy.new_policy.heads
    if not heads and spec.runtime.WhichOneof("kind") != "toolbench":
        raise InvalidArgument(
            f"{field}.new_policy.heads", "must have at least one head (only toolbench has default heads)"
        )
    names: set[str] = set()
    for i, head in enumerate(heads):
        where = f"{field}.new_policy.heads[{i}]"
        if not head.name:
            raise InvalidArgument(f"{where}.name", "is required")
        if head.name in names:
            raise InvalidArgument(f"{where}.name", f"{head.name!r} appears twice")
        names.add(head.name)
        buckets = head.feature_buckets
        if buckets != 0 and (
            not MIN_FEATURE_BUCKETS <= buckets <= MAX_FEATURE_BUCKETS or buckets & (buckets - 1)
        ):
            raise InvalidArgument(
                f"{where}.feature_buckets",
                f"must be a power of two from 16 to 2^22 (0 means 4096), got {buckets}",
            )
        if head.temperature != 0 and not (math.isfinite(head.temperature) and head.temperature > 0):
            raise InvalidArgument(
                f"{where}.temperature", f"must be > 0 (0 means 1.0), got {head.temperature}"
            )
        if len(set(head.options)) != len(head.options):
            raise InvalidArgument(f"{where}.options", "must not repeat an option")


def _check_grpo(spec: jobs_pb2.JobSpec) -> None:
    """The trainer's own validation, so a job is refused at submission for settings every update
    would refuse."""
    try:
        grpo_settings_from_proto(spec.grpo)
    except InvalidArgument as exc:
        name = exc.field.split(".", 1)[1] if "." in exc.field else exc.field
        raise InvalidArgument(f"{SPEC}.grpo.{name}", exc.description) from exc


def _check_reward(spec: jobs_pb2.JobSpec) -> None:
    reward = spec.reward
    for name in ("outcome_weight", "tool_usage_weight", "verification_weight", "length_penalty_weight"):
        if not math.isfinite(getattr(reward, name)):
            raise InvalidArgument(f"{SPEC}.reward.{name}", "must be a finite number")
    for name in ("step_budget", "token_budget"):
        if getattr(reward, name) < 0:
            raise InvalidArgument(f"{SPEC}.reward.{name}", f"must be >= 0, got {getattr(reward, name)}")
    advantage = spec.advantage
    field = f"{SPEC}.advantage"
    if advantage.normalization not in reward_pb2.AdvantageNormalization.values():
        raise InvalidArgument(f"{field}.normalization", f"unknown value {advantage.normalization}")
    if advantage.credit_assignment not in reward_pb2.CreditAssignment.values():
        raise InvalidArgument(f"{field}.credit_assignment", f"unknown value {advantage.credit_assignment}")
    if not 0 <= advantage.gamma <= 1:
        raise InvalidArgument(f"{field}.gamma", f"must be between 0 and 1, got {advantage.gamma}")
    if not (math.isfinite(advantage.epsilon) and advantage.epsilon >= 0):
        raise InvalidArgument(f"{field}.epsilon", f"must be >= 0, got {advantage.epsilon}")


def _check_retention(retention: checkpoint_pb2.RetentionPolicy) -> None:
    if retention.keep_best < 0:
        raise InvalidArgument(f"{SPEC}.retention.keep_best", f"must be >= 0, got {retention.keep_best}")
    if retention.direction not in checkpoint_pb2.MetricDirection.values():
        raise InvalidArgument(f"{SPEC}.retention.direction", f"unknown value {retention.direction}")


# -- budget estimates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutCeiling:
    """The most one rollout of a job may cost: tokens of `model` plus a cost of its own.

    Declared in the spec (`budget.max_rollout_tokens` priced as output tokens of `budget.pricing_model`,
    `budget.max_rollout_cost_micro_usd`) or, for toolbench's simulated tokens, known exactly: every
    step reports `simulated_tokens_per_step` (a quarter of them output), at most `max_steps` steps.
    """

    model: str
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int
    model_field: str
    """The spec field naming `model`, for an error when the budget service cannot price it."""

    def usage(self, rollouts: int) -> list[budget_pb2.ModelUsage]:
        if not self.model or not (self.input_tokens or self.output_tokens):
            return []
        return [
            budget_pb2.ModelUsage(
                model=self.model,
                input_tokens=rollouts * self.input_tokens,
                output_tokens=rollouts * self.output_tokens,
            )
        ]

    def price(self, prices: PriceTable, rollouts: int) -> int:
        """What `rollouts` rollouts may cost at most, in micro-USD (tokens of an unknown model: 0)."""
        tokens = 0
        for line in self.usage(rollouts):
            tokens += prices.price_micro_usd(
                line.model,
                trajectory_pb2.TokenUsage(input_tokens=line.input_tokens, output_tokens=line.output_tokens),
            )
        return tokens + rollouts * self.cost_micro_usd


def rollout_ceiling(spec: jobs_pb2.JobSpec) -> RolloutCeiling | None:
    """The spec's per-rollout ceiling; None when the runtime's cost cannot be told before it runs."""
    budget = spec.budget
    if budget.max_rollout_tokens or budget.max_rollout_cost_micro_usd:
        return RolloutCeiling(
            model=budget.pricing_model if budget.max_rollout_tokens else "",
            input_tokens=0,
            output_tokens=budget.max_rollout_tokens,
            cost_micro_usd=budget.max_rollout_cost_micro_usd,
            model_field=f"{SPEC}.budget.pricing_model",
        )
    bench = spec.runtime.toolbench
    if spec.runtime.WhichOneof("kind") == "toolbench" and bench.simulated_tokens_per_step > 0:
        per_step = bench.simulated_tokens_per_step
        steps = spec.max_steps or toolbench.DEFAULT_MAX_STEPS
        output = per_step // 4  # as the toolbench agent reports them
        return RolloutCeiling(
            model=bench.simulated_model or toolbench.ToolbenchOptions().model,
            input_tokens=steps * (per_step - output),
            output_tokens=steps * output,
            cost_micro_usd=0,
            model_field=f"{SPEC}.runtime.toolbench.simulated_model",
        )
    return None


def planned_rollouts(spec: jobs_pb2.JobSpec) -> int:
    """Every rollout a normalized spec runs: training, and both policies' at every evaluation."""
    dataset = spec.dataset
    fraction = dataset.heldout_fraction or DEFAULT_HELDOUT_FRACTION
    if dataset.WhichOneof("source") == "toolbench":
        train, heldout = dataset.toolbench.train_count, dataset.toolbench.heldout_count
    elif dataset.inline.heldout:
        train, heldout = len(dataset.inline.train), len(dataset.inline.heldout)
    else:  # as the runner splits them
        heldout = max(1, round(len(dataset.inline.train) * fraction))
        train = len(dataset.inline.train) - heldout
    evaluations = math.ceil(spec.iterations / (spec.evaluation_interval or DEFAULT_EVALUATION_INTERVAL))
    batch = min(spec.batch_size or DEFAULT_BATCH_SIZE, max(1, train))
    group = spec.group_size or DEFAULT_GROUP_SIZE
    return spec.iterations * batch * group + evaluations * heldout * 2 * EVALUATION_ROLLOUTS_PER_QUERY
