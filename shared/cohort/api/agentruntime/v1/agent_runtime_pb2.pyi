import datetime

from cohort.api.trajectory.v1 import trajectory_pb2 as _trajectory_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunRequest(_message.Message):
    __slots__ = ("rollout_id", "task", "query_id", "payload_json", "policy", "trainer_address", "api_key", "seed", "greedy", "max_steps", "timeout", "job_id", "group_id", "iteration", "exploration")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GREEDY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    task: str
    query_id: str
    payload_json: str
    policy: _trajectory_pb2.PolicyRef
    trainer_address: str
    api_key: str
    seed: int
    greedy: bool
    max_steps: int
    timeout: _duration_pb2.Duration
    job_id: str
    group_id: str
    iteration: int
    exploration: float
    def __init__(self, rollout_id: _Optional[str] = ..., task: _Optional[str] = ..., query_id: _Optional[str] = ..., payload_json: _Optional[str] = ..., policy: _Optional[_Union[_trajectory_pb2.PolicyRef, _Mapping]] = ..., trainer_address: _Optional[str] = ..., api_key: _Optional[str] = ..., seed: _Optional[int] = ..., greedy: _Optional[bool] = ..., max_steps: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., job_id: _Optional[str] = ..., group_id: _Optional[str] = ..., iteration: _Optional[int] = ..., exploration: _Optional[float] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: AgentEvent
    def __init__(self, event: _Optional[_Union[AgentEvent, _Mapping]] = ...) -> None: ...

class AgentEvent(_message.Message):
    __slots__ = ("started", "llm_interaction", "step", "decision", "finished")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    LLM_INTERACTION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    started: RunStarted
    llm_interaction: _trajectory_pb2.LlmInteraction
    step: _trajectory_pb2.AgentStep
    decision: _trajectory_pb2.Decision
    finished: RunFinished
    def __init__(self, started: _Optional[_Union[RunStarted, _Mapping]] = ..., llm_interaction: _Optional[_Union[_trajectory_pb2.LlmInteraction, _Mapping]] = ..., step: _Optional[_Union[_trajectory_pb2.AgentStep, _Mapping]] = ..., decision: _Optional[_Union[_trajectory_pb2.Decision, _Mapping]] = ..., finished: _Optional[_Union[RunFinished, _Mapping]] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("provider", "model", "agent")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    agent: _trajectory_pb2.AgentRef
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., agent: _Optional[_Union[_trajectory_pb2.AgentRef, _Mapping]] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("success", "final_result", "score", "termination_reason", "detail")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FINAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    success: bool
    final_result: str
    score: float
    termination_reason: _trajectory_pb2.TerminationReason
    detail: str
    def __init__(self, success: _Optional[bool] = ..., final_result: _Optional[str] = ..., score: _Optional[float] = ..., termination_reason: _Optional[_Union[_trajectory_pb2.TerminationReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...
