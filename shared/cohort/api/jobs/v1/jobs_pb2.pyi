import datetime

from cohort.api.checkpoint.v1 import checkpoint_pb2 as _checkpoint_pb2
from cohort.api.collector.v1 import collector_pb2 as _collector_pb2
from cohort.api.reward.v1 import reward_pb2 as _reward_pb2
from cohort.api.trainer.v1 import trainer_pb2 as _trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2 as _trajectory_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PauseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAUSE_REASON_UNSPECIFIED: _ClassVar[PauseReason]
    PAUSE_REASON_REQUESTED: _ClassVar[PauseReason]
    PAUSE_REASON_BUDGET_EXHAUSTED: _ClassVar[PauseReason]

class BatchSampling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_SAMPLING_UNSPECIFIED: _ClassVar[BatchSampling]
    BATCH_SAMPLING_STRATIFIED: _ClassVar[BatchSampling]
    BATCH_SAMPLING_UNIFORM: _ClassVar[BatchSampling]

class JobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_ENTROPY_COLLAPSE: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_ENTROPY_RECOVERED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_NO_SIGNAL: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_SIGNAL_RECOVERED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_STRATUM_STUCK: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_STRATUM_RECOVERED: _ClassVar[JobEventKind]
PAUSE_REASON_UNSPECIFIED: PauseReason
PAUSE_REASON_REQUESTED: PauseReason
PAUSE_REASON_BUDGET_EXHAUSTED: PauseReason
BATCH_SAMPLING_UNSPECIFIED: BatchSampling
BATCH_SAMPLING_STRATIFIED: BatchSampling
BATCH_SAMPLING_UNIFORM: BatchSampling
JOB_EVENT_KIND_UNSPECIFIED: JobEventKind
JOB_EVENT_KIND_ENTROPY_COLLAPSE: JobEventKind
JOB_EVENT_KIND_ENTROPY_RECOVERED: JobEventKind
JOB_EVENT_KIND_NO_SIGNAL: JobEventKind
JOB_EVENT_KIND_SIGNAL_RECOVERED: JobEventKind
JOB_EVENT_KIND_STRATUM_STUCK: JobEventKind
JOB_EVENT_KIND_STRATUM_RECOVERED: JobEventKind

class Job(_message.Message):
    __slots__ = ("job_id", "tenant_id", "display_name", "spec", "state", "pause_reason", "progress", "revision", "create_time", "update_time", "start_time", "end_time", "error")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Job.State]
        STATE_QUEUED: _ClassVar[Job.State]
        STATE_RUNNING: _ClassVar[Job.State]
        STATE_PAUSED: _ClassVar[Job.State]
        STATE_SUCCEEDED: _ClassVar[Job.State]
        STATE_FAILED: _ClassVar[Job.State]
        STATE_CANCELLING: _ClassVar[Job.State]
        STATE_CANCELLED: _ClassVar[Job.State]
    STATE_UNSPECIFIED: Job.State
    STATE_QUEUED: Job.State
    STATE_RUNNING: Job.State
    STATE_PAUSED: Job.State
    STATE_SUCCEEDED: Job.State
    STATE_FAILED: Job.State
    STATE_CANCELLING: Job.State
    STATE_CANCELLED: Job.State
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    display_name: str
    spec: JobSpec
    state: Job.State
    pause_reason: PauseReason
    progress: JobProgress
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: _status_pb2.Status
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., display_name: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[Job.State, str]] = ..., pause_reason: _Optional[_Union[PauseReason, str]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("runtime", "dataset", "policy", "group_size", "iterations", "batch_size", "grpo", "reward", "advantage", "checkpoint_interval", "retention", "evaluation_interval", "budget", "failure_policy", "seed", "rollout_timeout", "max_concurrency", "max_steps", "max_attempts", "exploration", "collapse_detection")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRPO_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_DETECTION_FIELD_NUMBER: _ClassVar[int]
    runtime: _collector_pb2.RuntimeSpec
    dataset: DatasetSpec
    policy: PolicySource
    group_size: int
    iterations: int
    batch_size: int
    grpo: _trainer_pb2.GrpoConfig
    reward: _reward_pb2.RewardSpec
    advantage: _reward_pb2.AdvantageConfig
    checkpoint_interval: int
    retention: _checkpoint_pb2.RetentionPolicy
    evaluation_interval: int
    budget: BudgetSpec
    failure_policy: _reward_pb2.FailurePolicy
    seed: int
    rollout_timeout: _duration_pb2.Duration
    max_concurrency: int
    max_steps: int
    max_attempts: int
    exploration: Exploration
    collapse_detection: CollapseDetection
    def __init__(self, runtime: _Optional[_Union[_collector_pb2.RuntimeSpec, _Mapping]] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., policy: _Optional[_Union[PolicySource, _Mapping]] = ..., group_size: _Optional[int] = ..., iterations: _Optional[int] = ..., batch_size: _Optional[int] = ..., grpo: _Optional[_Union[_trainer_pb2.GrpoConfig, _Mapping]] = ..., reward: _Optional[_Union[_reward_pb2.RewardSpec, _Mapping]] = ..., advantage: _Optional[_Union[_reward_pb2.AdvantageConfig, _Mapping]] = ..., checkpoint_interval: _Optional[int] = ..., retention: _Optional[_Union[_checkpoint_pb2.RetentionPolicy, _Mapping]] = ..., evaluation_interval: _Optional[int] = ..., budget: _Optional[_Union[BudgetSpec, _Mapping]] = ..., failure_policy: _Optional[_Union[_reward_pb2.FailurePolicy, str]] = ..., seed: _Optional[int] = ..., rollout_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_concurrency: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_attempts: _Optional[int] = ..., exploration: _Optional[_Union[Exploration, _Mapping]] = ..., collapse_detection: _Optional[_Union[CollapseDetection, _Mapping]] = ...) -> None: ...

class CollapseDetection(_message.Message):
    __slots__ = ("min_relative_entropy", "entropy_success_ceiling", "max_failed_zero_variance_share", "stuck_iterations")
    MIN_RELATIVE_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_SUCCESS_CEILING_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILED_ZERO_VARIANCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    STUCK_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    min_relative_entropy: float
    entropy_success_ceiling: float
    max_failed_zero_variance_share: float
    stuck_iterations: int
    def __init__(self, min_relative_entropy: _Optional[float] = ..., entropy_success_ceiling: _Optional[float] = ..., max_failed_zero_variance_share: _Optional[float] = ..., stuck_iterations: _Optional[int] = ...) -> None: ...

class Exploration(_message.Message):
    __slots__ = ("epsilon", "decay_iterations")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DECAY_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    decay_iterations: int
    def __init__(self, epsilon: _Optional[float] = ..., decay_iterations: _Optional[int] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("inline", "toolbench", "heldout_fraction", "batch_sampling")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    TOOLBENCH_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    inline: InlineQueries
    toolbench: ToolbenchQueries
    heldout_fraction: float
    batch_sampling: BatchSampling
    def __init__(self, inline: _Optional[_Union[InlineQueries, _Mapping]] = ..., toolbench: _Optional[_Union[ToolbenchQueries, _Mapping]] = ..., heldout_fraction: _Optional[float] = ..., batch_sampling: _Optional[_Union[BatchSampling, str]] = ...) -> None: ...

class InlineQueries(_message.Message):
    __slots__ = ("train", "heldout")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FIELD_NUMBER: _ClassVar[int]
    train: _containers.RepeatedCompositeFieldContainer[_collector_pb2.Query]
    heldout: _containers.RepeatedCompositeFieldContainer[_collector_pb2.Query]
    def __init__(self, train: _Optional[_Iterable[_Union[_collector_pb2.Query, _Mapping]]] = ..., heldout: _Optional[_Iterable[_Union[_collector_pb2.Query, _Mapping]]] = ...) -> None: ...

class ToolbenchQueries(_message.Message):
    __slots__ = ("train_count", "heldout_count", "seed", "task_families")
    TRAIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TASK_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    train_count: int
    heldout_count: int
    seed: int
    task_families: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, train_count: _Optional[int] = ..., heldout_count: _Optional[int] = ..., seed: _Optional[int] = ..., task_families: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicySource(_message.Message):
    __slots__ = ("existing", "new_policy")
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    NEW_POLICY_FIELD_NUMBER: _ClassVar[int]
    existing: _trajectory_pb2.PolicyRef
    new_policy: NewPolicy
    def __init__(self, existing: _Optional[_Union[_trajectory_pb2.PolicyRef, _Mapping]] = ..., new_policy: _Optional[_Union[NewPolicy, _Mapping]] = ...) -> None: ...

class NewPolicy(_message.Message):
    __slots__ = ("heads", "display_name")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[_trainer_pb2.DecisionHead]
    display_name: str
    def __init__(self, heads: _Optional[_Iterable[_Union[_trainer_pb2.DecisionHead, _Mapping]]] = ..., display_name: _Optional[str] = ...) -> None: ...

class BudgetSpec(_message.Message):
    __slots__ = ("limit_micro_usd", "pricing_model", "max_rollout_tokens", "max_rollout_cost_micro_usd")
    LIMIT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    PRICING_MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_ROLLOUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROLLOUT_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    limit_micro_usd: int
    pricing_model: str
    max_rollout_tokens: int
    max_rollout_cost_micro_usd: int
    def __init__(self, limit_micro_usd: _Optional[int] = ..., pricing_model: _Optional[str] = ..., max_rollout_tokens: _Optional[int] = ..., max_rollout_cost_micro_usd: _Optional[int] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("iteration", "iterations_total", "rollouts_completed", "latest_update", "success_rate", "reward_mean", "policy", "latest_checkpoint_id", "cost_micro_usd", "evaluations", "eta", "attempt", "failed_attempts", "last_attempt_error", "health", "events")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    LATEST_UPDATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_ERROR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    iterations_total: int
    rollouts_completed: int
    latest_update: _trainer_pb2.UpdateMetrics
    success_rate: float
    reward_mean: float
    policy: _trajectory_pb2.PolicyRef
    latest_checkpoint_id: str
    cost_micro_usd: int
    evaluations: _containers.RepeatedCompositeFieldContainer[Evaluation]
    eta: _duration_pb2.Duration
    attempt: int
    failed_attempts: int
    last_attempt_error: _status_pb2.Status
    health: LearningHealth
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, iteration: _Optional[int] = ..., iterations_total: _Optional[int] = ..., rollouts_completed: _Optional[int] = ..., latest_update: _Optional[_Union[_trainer_pb2.UpdateMetrics, _Mapping]] = ..., success_rate: _Optional[float] = ..., reward_mean: _Optional[float] = ..., policy: _Optional[_Union[_trajectory_pb2.PolicyRef, _Mapping]] = ..., latest_checkpoint_id: _Optional[str] = ..., cost_micro_usd: _Optional[int] = ..., evaluations: _Optional[_Iterable[_Union[Evaluation, _Mapping]]] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempt: _Optional[int] = ..., failed_attempts: _Optional[int] = ..., last_attempt_error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., health: _Optional[_Union[LearningHealth, _Mapping]] = ..., events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class LearningHealth(_message.Message):
    __slots__ = ("groups", "zero_variance_share", "failed_zero_variance_share", "decisions", "entropy_mean", "relative_entropy_mean", "iterations_without_update", "strata")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ZERO_VARIANCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    FAILED_ZERO_VARIANCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_MEAN_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_ENTROPY_MEAN_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_WITHOUT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    STRATA_FIELD_NUMBER: _ClassVar[int]
    groups: int
    zero_variance_share: float
    failed_zero_variance_share: float
    decisions: int
    entropy_mean: float
    relative_entropy_mean: float
    iterations_without_update: int
    strata: _containers.RepeatedCompositeFieldContainer[StratumHealth]
    def __init__(self, groups: _Optional[int] = ..., zero_variance_share: _Optional[float] = ..., failed_zero_variance_share: _Optional[float] = ..., decisions: _Optional[int] = ..., entropy_mean: _Optional[float] = ..., relative_entropy_mean: _Optional[float] = ..., iterations_without_update: _Optional[int] = ..., strata: _Optional[_Iterable[_Union[StratumHealth, _Mapping]]] = ...) -> None: ...

class StratumHealth(_message.Message):
    __slots__ = ("name", "success_rate", "rollouts", "last_iteration", "zero_success_iterations", "stuck")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ITERATION_FIELD_NUMBER: _ClassVar[int]
    ZERO_SUCCESS_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    name: str
    success_rate: float
    rollouts: int
    last_iteration: int
    zero_success_iterations: int
    stuck: bool
    def __init__(self, name: _Optional[str] = ..., success_rate: _Optional[float] = ..., rollouts: _Optional[int] = ..., last_iteration: _Optional[int] = ..., zero_success_iterations: _Optional[int] = ..., stuck: _Optional[bool] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("kind", "iteration", "stratum", "message", "value", "create_time")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    STRATUM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    kind: JobEventKind
    iteration: int
    stratum: str
    message: str
    value: float
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[_Union[JobEventKind, str]] = ..., iteration: _Optional[int] = ..., stratum: _Optional[str] = ..., message: _Optional[str] = ..., value: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvaluationSummary(_message.Message):
    __slots__ = ("policy", "success_rate", "reward_mean", "tool_accuracy", "steps_mean", "cost_micro_usd", "query_count")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    TOOL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    STEPS_MEAN_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    QUERY_COUNT_FIELD_NUMBER: _ClassVar[int]
    policy: _trajectory_pb2.PolicyRef
    success_rate: float
    reward_mean: float
    tool_accuracy: float
    steps_mean: float
    cost_micro_usd: int
    query_count: int
    def __init__(self, policy: _Optional[_Union[_trajectory_pb2.PolicyRef, _Mapping]] = ..., success_rate: _Optional[float] = ..., reward_mean: _Optional[float] = ..., tool_accuracy: _Optional[float] = ..., steps_mean: _Optional[float] = ..., cost_micro_usd: _Optional[int] = ..., query_count: _Optional[int] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("checkpoint_id", "iteration", "baseline", "candidate", "success_rate_difference", "success_rate_difference_ci_low", "success_rate_difference_ci_high", "mcnemar_p_value", "reward_difference", "create_time")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_DIFFERENCE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_DIFFERENCE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    MCNEMAR_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    REWARD_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    iteration: int
    baseline: EvaluationSummary
    candidate: EvaluationSummary
    success_rate_difference: float
    success_rate_difference_ci_low: float
    success_rate_difference_ci_high: float
    mcnemar_p_value: float
    reward_difference: float
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, checkpoint_id: _Optional[str] = ..., iteration: _Optional[int] = ..., baseline: _Optional[_Union[EvaluationSummary, _Mapping]] = ..., candidate: _Optional[_Union[EvaluationSummary, _Mapping]] = ..., success_rate_difference: _Optional[float] = ..., success_rate_difference_ci_low: _Optional[float] = ..., success_rate_difference_ci_high: _Optional[float] = ..., mcnemar_p_value: _Optional[float] = ..., reward_difference: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("request_id", "job")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job: Job
    def __init__(self, request_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[Job.State]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[Job.State, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_revision")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_revision: int
    def __init__(self, job_id: _Optional[str] = ..., after_revision: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job", "heartbeat")
    JOB_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    job: Job
    heartbeat: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., heartbeat: _Optional[bool] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class PauseJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class RelaunchJobRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class RelaunchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class EvaluateJobRequest(_message.Message):
    __slots__ = ("request_id", "job_id", "checkpoint_id", "queries", "seed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    checkpoint_id: str
    queries: _containers.RepeatedCompositeFieldContainer[_collector_pb2.Query]
    seed: int
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[_collector_pb2.Query, _Mapping]]] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluateJobResponse(_message.Message):
    __slots__ = ("evaluation",)
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    evaluation: Evaluation
    def __init__(self, evaluation: _Optional[_Union[Evaluation, _Mapping]] = ...) -> None: ...
