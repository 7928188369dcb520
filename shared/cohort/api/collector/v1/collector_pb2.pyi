import datetime

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

class TrajectoryView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAJECTORY_VIEW_UNSPECIFIED: _ClassVar[TrajectoryView]
    TRAJECTORY_VIEW_BASIC: _ClassVar[TrajectoryView]
    TRAJECTORY_VIEW_FULL: _ClassVar[TrajectoryView]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_COHORT_JSONL: _ClassVar[ExportFormat]
    EXPORT_FORMAT_TRAE_JSON: _ClassVar[ExportFormat]
    EXPORT_FORMAT_OPENAI_CHAT_JSONL: _ClassVar[ExportFormat]
TRAJECTORY_VIEW_UNSPECIFIED: TrajectoryView
TRAJECTORY_VIEW_BASIC: TrajectoryView
TRAJECTORY_VIEW_FULL: TrajectoryView
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_COHORT_JSONL: ExportFormat
EXPORT_FORMAT_TRAE_JSON: ExportFormat
EXPORT_FORMAT_OPENAI_CHAT_JSONL: ExportFormat

class RuntimeSpec(_message.Message):
    __slots__ = ("python", "grpc", "toolbench", "agent")
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    TOOLBENCH_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    python: PythonRuntime
    grpc: GrpcRuntime
    toolbench: ToolbenchRuntime
    agent: _trajectory_pb2.AgentRef
    def __init__(self, python: _Optional[_Union[PythonRuntime, _Mapping]] = ..., grpc: _Optional[_Union[GrpcRuntime, _Mapping]] = ..., toolbench: _Optional[_Union[ToolbenchRuntime, _Mapping]] = ..., agent: _Optional[_Union[_trajectory_pb2.AgentRef, _Mapping]] = ...) -> None: ...

class PythonRuntime(_message.Message):
    __slots__ = ("entry_point",)
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    entry_point: str
    def __init__(self, entry_point: _Optional[str] = ...) -> None: ...

class GrpcRuntime(_message.Message):
    __slots__ = ("address", "use_tls")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USE_TLS_FIELD_NUMBER: _ClassVar[int]
    address: str
    use_tls: bool
    def __init__(self, address: _Optional[str] = ..., use_tls: _Optional[bool] = ...) -> None: ...

class ToolbenchRuntime(_message.Message):
    __slots__ = ("task_families", "simulated_step_latency", "simulated_tokens_per_step", "simulated_model", "avoid_repeating_failed_calls")
    TASK_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_STEP_LATENCY_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_TOKENS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_MODEL_FIELD_NUMBER: _ClassVar[int]
    AVOID_REPEATING_FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    task_families: _containers.RepeatedScalarFieldContainer[str]
    simulated_step_latency: _duration_pb2.Duration
    simulated_tokens_per_step: int
    simulated_model: str
    avoid_repeating_failed_calls: bool
    def __init__(self, task_families: _Optional[_Iterable[str]] = ..., simulated_step_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., simulated_tokens_per_step: _Optional[int] = ..., simulated_model: _Optional[str] = ..., avoid_repeating_failed_calls: _Optional[bool] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("query_id", "text", "payload_json", "expected_answer", "stratum")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    STRATUM_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    text: str
    payload_json: str
    expected_answer: str
    stratum: str
    def __init__(self, query_id: _Optional[str] = ..., text: _Optional[str] = ..., payload_json: _Optional[str] = ..., expected_answer: _Optional[str] = ..., stratum: _Optional[str] = ...) -> None: ...

class CollectGroupRequest(_message.Message):
    __slots__ = ("request_id", "runtime", "query", "group_size", "policy", "job_id", "group_id", "iteration", "rollout_timeout", "max_concurrency", "seed", "greedy", "max_steps", "labels", "exploration")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    runtime: RuntimeSpec
    query: Query
    group_size: int
    policy: _trajectory_pb2.PolicyRef
    job_id: str
    group_id: str
    iteration: int
    rollout_timeout: _duration_pb2.Duration
    max_concurrency: int
    seed: int
    greedy: bool
    max_steps: int
    labels: _containers.ScalarMap[str, str]
    exploration: float
    def __init__(self, request_id: _Optional[str] = ..., runtime: _Optional[_Union[RuntimeSpec, _Mapping]] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., group_size: _Optional[int] = ..., policy: _Optional[_Union[_trajectory_pb2.PolicyRef, _Mapping]] = ..., job_id: _Optional[str] = ..., group_id: _Optional[str] = ..., iteration: _Optional[int] = ..., rollout_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_concurrency: _Optional[int] = ..., seed: _Optional[int] = ..., greedy: _Optional[bool] = ..., max_steps: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., exploration: _Optional[float] = ...) -> None: ...

class CollectGroupResponse(_message.Message):
    __slots__ = ("trajectory", "rollout_index")
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    trajectory: _trajectory_pb2.Trajectory
    rollout_index: int
    def __init__(self, trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ..., rollout_index: _Optional[int] = ...) -> None: ...

class IngestTrajectoriesRequest(_message.Message):
    __slots__ = ("trajectory",)
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    trajectory: _trajectory_pb2.Trajectory
    def __init__(self, trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ...) -> None: ...

class IngestTrajectoriesResponse(_message.Message):
    __slots__ = ("stored_count", "duplicate_count", "failures", "trajectory_ids")
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_IDS_FIELD_NUMBER: _ClassVar[int]
    stored_count: int
    duplicate_count: int
    failures: _containers.RepeatedCompositeFieldContainer[IngestFailure]
    trajectory_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[IngestFailure, _Mapping]]] = ..., trajectory_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestFailure(_message.Message):
    __slots__ = ("index", "trajectory_id", "status")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    index: int
    trajectory_id: str
    status: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., trajectory_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class SupersedeTrajectoriesRequest(_message.Message):
    __slots__ = ("request_id", "job_id", "from_iteration", "current_attempt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ITERATION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    from_iteration: int
    current_attempt: int
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., from_iteration: _Optional[int] = ..., current_attempt: _Optional[int] = ...) -> None: ...

class SupersedeTrajectoriesResponse(_message.Message):
    __slots__ = ("superseded_count",)
    SUPERSEDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    superseded_count: int
    def __init__(self, superseded_count: _Optional[int] = ...) -> None: ...

class RecordScoresRequest(_message.Message):
    __slots__ = ("request_id", "scores")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scores: _containers.RepeatedCompositeFieldContainer[TrajectoryScore]
    def __init__(self, request_id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[TrajectoryScore, _Mapping]]] = ...) -> None: ...

class TrajectoryScore(_message.Message):
    __slots__ = ("trajectory_id", "reward", "components", "advantage", "decision_advantages")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ADVANTAGES_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    reward: float
    components: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.RewardComponent]
    advantage: float
    decision_advantages: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, trajectory_id: _Optional[str] = ..., reward: _Optional[float] = ..., components: _Optional[_Iterable[_Union[_trajectory_pb2.RewardComponent, _Mapping]]] = ..., advantage: _Optional[float] = ..., decision_advantages: _Optional[_Iterable[float]] = ...) -> None: ...

class RecordScoresResponse(_message.Message):
    __slots__ = ("recorded_count", "unchanged_count", "failures")
    RECORDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    recorded_count: int
    unchanged_count: int
    failures: _containers.RepeatedCompositeFieldContainer[RecordScoreFailure]
    def __init__(self, recorded_count: _Optional[int] = ..., unchanged_count: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[RecordScoreFailure, _Mapping]]] = ...) -> None: ...

class RecordScoreFailure(_message.Message):
    __slots__ = ("index", "trajectory_id", "status")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    index: int
    trajectory_id: str
    status: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., trajectory_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class GetTrajectoryRequest(_message.Message):
    __slots__ = ("trajectory_id",)
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    def __init__(self, trajectory_id: _Optional[str] = ...) -> None: ...

class GetTrajectoryResponse(_message.Message):
    __slots__ = ("trajectory",)
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    trajectory: _trajectory_pb2.Trajectory
    def __init__(self, trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ...) -> None: ...

class TrajectoryFilter(_message.Message):
    __slots__ = ("agent_name", "agent_version", "job_id", "group_id", "iteration", "success", "termination_reasons", "min_reward", "max_reward", "start_time", "end_time", "labels", "include_superseded")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASONS_FIELD_NUMBER: _ClassVar[int]
    MIN_REWARD_FIELD_NUMBER: _ClassVar[int]
    MAX_REWARD_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    agent_version: str
    job_id: str
    group_id: str
    iteration: int
    success: bool
    termination_reasons: _containers.RepeatedScalarFieldContainer[_trajectory_pb2.TerminationReason]
    min_reward: float
    max_reward: float
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    include_superseded: bool
    def __init__(self, agent_name: _Optional[str] = ..., agent_version: _Optional[str] = ..., job_id: _Optional[str] = ..., group_id: _Optional[str] = ..., iteration: _Optional[int] = ..., success: _Optional[bool] = ..., termination_reasons: _Optional[_Iterable[_Union[_trajectory_pb2.TerminationReason, str]]] = ..., min_reward: _Optional[float] = ..., max_reward: _Optional[float] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., include_superseded: _Optional[bool] = ...) -> None: ...

class SearchTrajectoriesRequest(_message.Message):
    __slots__ = ("filter", "text_query", "similar_to_text", "similar_to_trajectory_id", "page_size", "page_token", "view")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TEXT_QUERY_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_TO_TEXT_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_TO_TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    filter: TrajectoryFilter
    text_query: str
    similar_to_text: str
    similar_to_trajectory_id: str
    page_size: int
    page_token: str
    view: TrajectoryView
    def __init__(self, filter: _Optional[_Union[TrajectoryFilter, _Mapping]] = ..., text_query: _Optional[str] = ..., similar_to_text: _Optional[str] = ..., similar_to_trajectory_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[TrajectoryView, str]] = ...) -> None: ...

class SearchTrajectoriesResponse(_message.Message):
    __slots__ = ("hits", "next_page_token")
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    next_page_token: str
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("trajectory", "score")
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    trajectory: _trajectory_pb2.Trajectory
    score: float
    def __init__(self, trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class ExportTrajectoriesRequest(_message.Message):
    __slots__ = ("filter", "format", "limit")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    filter: TrajectoryFilter
    format: ExportFormat
    limit: int
    def __init__(self, filter: _Optional[_Union[TrajectoryFilter, _Mapping]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ExportTrajectoriesResponse(_message.Message):
    __slots__ = ("trajectory_id", "record", "create_time")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    record: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, trajectory_id: _Optional[str] = ..., record: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
