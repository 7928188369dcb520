import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TerminationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TERMINATION_REASON_UNSPECIFIED: _ClassVar[TerminationReason]
    TERMINATION_REASON_COMPLETED: _ClassVar[TerminationReason]
    TERMINATION_REASON_MAX_STEPS: _ClassVar[TerminationReason]
    TERMINATION_REASON_TIMEOUT: _ClassVar[TerminationReason]
    TERMINATION_REASON_ERROR: _ClassVar[TerminationReason]
    TERMINATION_REASON_CANCELLED: _ClassVar[TerminationReason]
    TERMINATION_REASON_BUDGET_EXHAUSTED: _ClassVar[TerminationReason]
    TERMINATION_REASON_CRASHED: _ClassVar[TerminationReason]
    TERMINATION_REASON_IN_PROGRESS: _ClassVar[TerminationReason]

class OutcomeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_KIND_UNSPECIFIED: _ClassVar[OutcomeKind]
    OUTCOME_KIND_SUCCESS: _ClassVar[OutcomeKind]
    OUTCOME_KIND_PARTIAL: _ClassVar[OutcomeKind]
    OUTCOME_KIND_FAILURE: _ClassVar[OutcomeKind]
TERMINATION_REASON_UNSPECIFIED: TerminationReason
TERMINATION_REASON_COMPLETED: TerminationReason
TERMINATION_REASON_MAX_STEPS: TerminationReason
TERMINATION_REASON_TIMEOUT: TerminationReason
TERMINATION_REASON_ERROR: TerminationReason
TERMINATION_REASON_CANCELLED: TerminationReason
TERMINATION_REASON_BUDGET_EXHAUSTED: TerminationReason
TERMINATION_REASON_CRASHED: TerminationReason
TERMINATION_REASON_IN_PROGRESS: TerminationReason
OUTCOME_KIND_UNSPECIFIED: OutcomeKind
OUTCOME_KIND_SUCCESS: OutcomeKind
OUTCOME_KIND_PARTIAL: OutcomeKind
OUTCOME_KIND_FAILURE: OutcomeKind

class Trajectory(_message.Message):
    __slots__ = ("trajectory_id", "tenant_id", "task", "start_time", "end_time", "provider", "model", "max_steps", "llm_interactions", "agent_steps", "success", "final_result", "execution_time_seconds", "agent", "job_id", "group_id", "iteration", "query_id", "policy", "decisions", "termination_reason", "termination_detail", "outcome", "reward", "reward_components", "advantage", "total_usage", "cost_micro_usd", "labels", "superseded", "create_time", "extra_json")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LLM_INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    AGENT_STEPS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FINAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    REWARD_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    tenant_id: str
    task: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    provider: str
    model: str
    max_steps: int
    llm_interactions: _containers.RepeatedCompositeFieldContainer[LlmInteraction]
    agent_steps: _containers.RepeatedCompositeFieldContainer[AgentStep]
    success: bool
    final_result: str
    execution_time_seconds: float
    agent: AgentRef
    job_id: str
    group_id: str
    iteration: int
    query_id: str
    policy: PolicyRef
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    termination_reason: TerminationReason
    termination_detail: str
    outcome: Outcome
    reward: float
    reward_components: _containers.RepeatedCompositeFieldContainer[RewardComponent]
    advantage: float
    total_usage: TokenUsage
    cost_micro_usd: int
    labels: _containers.ScalarMap[str, str]
    superseded: bool
    create_time: _timestamp_pb2.Timestamp
    extra_json: str
    def __init__(self, trajectory_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., task: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., max_steps: _Optional[int] = ..., llm_interactions: _Optional[_Iterable[_Union[LlmInteraction, _Mapping]]] = ..., agent_steps: _Optional[_Iterable[_Union[AgentStep, _Mapping]]] = ..., success: _Optional[bool] = ..., final_result: _Optional[str] = ..., execution_time_seconds: _Optional[float] = ..., agent: _Optional[_Union[AgentRef, _Mapping]] = ..., job_id: _Optional[str] = ..., group_id: _Optional[str] = ..., iteration: _Optional[int] = ..., query_id: _Optional[str] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., termination_reason: _Optional[_Union[TerminationReason, str]] = ..., termination_detail: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ..., reward: _Optional[float] = ..., reward_components: _Optional[_Iterable[_Union[RewardComponent, _Mapping]]] = ..., advantage: _Optional[float] = ..., total_usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., cost_micro_usd: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., superseded: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class AgentRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class PolicyRef(_message.Message):
    __slots__ = ("policy_id", "version")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    version: int
    def __init__(self, policy_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class LlmInteraction(_message.Message):
    __slots__ = ("timestamp", "provider", "model", "input_messages", "response", "tools_available", "tools_available_null", "latency", "extra_json")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TOOLS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    TOOLS_AVAILABLE_NULL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    provider: str
    model: str
    input_messages: _containers.RepeatedCompositeFieldContainer[Message]
    response: LlmResponse
    tools_available: _containers.RepeatedScalarFieldContainer[str]
    tools_available_null: bool
    latency: _duration_pb2.Duration
    extra_json: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., input_messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., response: _Optional[_Union[LlmResponse, _Mapping]] = ..., tools_available: _Optional[_Iterable[str]] = ..., tools_available_null: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "content_json", "tool_call", "tool_calls", "tool_result", "tool_call_id", "name", "extra_json")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    content_json: str
    tool_call: ToolCall
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_result: ToolResult
    tool_call_id: str
    name: str
    extra_json: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., content_json: _Optional[str] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., tool_call_id: _Optional[str] = ..., name: _Optional[str] = ..., extra_json: _Optional[str] = ...) -> None: ...

class LlmResponse(_message.Message):
    __slots__ = ("content", "model", "finish_reason", "usage", "tool_calls", "extra_json")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    content: str
    model: str
    finish_reason: str
    usage: TokenUsage
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    extra_json: str
    def __init__(self, content: _Optional[str] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "reasoning_tokens", "simulated", "extra_json")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    reasoning_tokens: int
    simulated: bool
    extra_json: str
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., simulated: _Optional[bool] = ..., extra_json: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json", "id", "extra_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    id: str
    extra_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., id: _Optional[str] = ..., extra_json: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("call_id", "success", "result", "error", "id", "latency", "extra_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    success: bool
    result: str
    error: str
    id: str
    latency: _duration_pb2.Duration
    extra_json: str
    def __init__(self, call_id: _Optional[str] = ..., success: _Optional[bool] = ..., result: _Optional[str] = ..., error: _Optional[str] = ..., id: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class AgentStep(_message.Message):
    __slots__ = ("step_number", "timestamp", "state", "llm_messages", "llm_messages_null", "llm_response", "tool_calls", "tool_calls_null", "tool_results", "tool_results_null", "reflection", "error", "step_reward", "usage", "extra_json")
    STEP_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LLM_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    LLM_MESSAGES_NULL_FIELD_NUMBER: _ClassVar[int]
    LLM_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_NULL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULTS_NULL_FIELD_NUMBER: _ClassVar[int]
    REFLECTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STEP_REWARD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    step_number: int
    timestamp: _timestamp_pb2.Timestamp
    state: str
    llm_messages: _containers.RepeatedCompositeFieldContainer[Message]
    llm_messages_null: bool
    llm_response: LlmResponse
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_calls_null: bool
    tool_results: _containers.RepeatedCompositeFieldContainer[ToolResult]
    tool_results_null: bool
    reflection: str
    error: str
    step_reward: float
    usage: TokenUsage
    extra_json: str
    def __init__(self, step_number: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[str] = ..., llm_messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., llm_messages_null: _Optional[bool] = ..., llm_response: _Optional[_Union[LlmResponse, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_calls_null: _Optional[bool] = ..., tool_results: _Optional[_Iterable[_Union[ToolResult, _Mapping]]] = ..., tool_results_null: _Optional[bool] = ..., reflection: _Optional[str] = ..., error: _Optional[str] = ..., step_reward: _Optional[float] = ..., usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("head", "options", "chosen_index", "chosen", "log_prob", "probabilities", "features", "option_features", "policy", "step_number", "timestamp", "greedy", "advantage", "exploration")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    HEAD_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OPTION_FEATURES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STEP_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    head: str
    options: _containers.RepeatedScalarFieldContainer[str]
    chosen_index: int
    chosen: str
    log_prob: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    features: _containers.ScalarMap[str, float]
    option_features: _containers.RepeatedCompositeFieldContainer[FeatureMap]
    policy: PolicyRef
    step_number: int
    timestamp: _timestamp_pb2.Timestamp
    greedy: bool
    advantage: float
    exploration: float
    def __init__(self, head: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., chosen_index: _Optional[int] = ..., chosen: _Optional[str] = ..., log_prob: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., features: _Optional[_Mapping[str, float]] = ..., option_features: _Optional[_Iterable[_Union[FeatureMap, _Mapping]]] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., step_number: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., greedy: _Optional[bool] = ..., advantage: _Optional[float] = ..., exploration: _Optional[float] = ...) -> None: ...

class FeatureMap(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("kind", "score", "confidence", "reasons", "inferred")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    INFERRED_FIELD_NUMBER: _ClassVar[int]
    kind: OutcomeKind
    score: float
    confidence: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    inferred: bool
    def __init__(self, kind: _Optional[_Union[OutcomeKind, str]] = ..., score: _Optional[float] = ..., confidence: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., inferred: _Optional[bool] = ...) -> None: ...

class RewardComponent(_message.Message):
    __slots__ = ("name", "value", "weight", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    weight: float
    detail: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., weight: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...
