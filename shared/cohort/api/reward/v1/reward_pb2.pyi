import datetime

from cohort.api.trajectory.v1 import trajectory_pb2 as _trajectory_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdvantageNormalization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADVANTAGE_NORMALIZATION_UNSPECIFIED: _ClassVar[AdvantageNormalization]
    ADVANTAGE_NORMALIZATION_MEAN_STD: _ClassVar[AdvantageNormalization]
    ADVANTAGE_NORMALIZATION_MEAN_ONLY: _ClassVar[AdvantageNormalization]

class CreditAssignment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDIT_ASSIGNMENT_UNSPECIFIED: _ClassVar[CreditAssignment]
    CREDIT_ASSIGNMENT_BROADCAST: _ClassVar[CreditAssignment]
    CREDIT_ASSIGNMENT_DISCOUNTED_RETURNS: _ClassVar[CreditAssignment]

class FailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_POLICY_UNSPECIFIED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_SCORE_AS_FAILURE: _ClassVar[FailurePolicy]
    FAILURE_POLICY_DROP: _ClassVar[FailurePolicy]
    FAILURE_POLICY_RETRY: _ClassVar[FailurePolicy]

class RewardFunctionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_FUNCTION_KIND_UNSPECIFIED: _ClassVar[RewardFunctionKind]
    REWARD_FUNCTION_KIND_BUILTIN: _ClassVar[RewardFunctionKind]
    REWARD_FUNCTION_KIND_PYTHON: _ClassVar[RewardFunctionKind]
    REWARD_FUNCTION_KIND_REMOTE: _ClassVar[RewardFunctionKind]
ADVANTAGE_NORMALIZATION_UNSPECIFIED: AdvantageNormalization
ADVANTAGE_NORMALIZATION_MEAN_STD: AdvantageNormalization
ADVANTAGE_NORMALIZATION_MEAN_ONLY: AdvantageNormalization
CREDIT_ASSIGNMENT_UNSPECIFIED: CreditAssignment
CREDIT_ASSIGNMENT_BROADCAST: CreditAssignment
CREDIT_ASSIGNMENT_DISCOUNTED_RETURNS: CreditAssignment
FAILURE_POLICY_UNSPECIFIED: FailurePolicy
FAILURE_POLICY_SCORE_AS_FAILURE: FailurePolicy
FAILURE_POLICY_DROP: FailurePolicy
FAILURE_POLICY_RETRY: FailurePolicy
REWARD_FUNCTION_KIND_UNSPECIFIED: RewardFunctionKind
REWARD_FUNCTION_KIND_BUILTIN: RewardFunctionKind
REWARD_FUNCTION_KIND_PYTHON: RewardFunctionKind
REWARD_FUNCTION_KIND_REMOTE: RewardFunctionKind

class RewardSpec(_message.Message):
    __slots__ = ("outcome_weight", "tool_usage_weight", "verification_weight", "length_penalty_weight", "step_budget", "token_budget", "custom_functions")
    OUTCOME_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TOOL_USAGE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LENGTH_PENALTY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEP_BUDGET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    outcome_weight: float
    tool_usage_weight: float
    verification_weight: float
    length_penalty_weight: float
    step_budget: int
    token_budget: int
    custom_functions: _containers.RepeatedCompositeFieldContainer[WeightedFunction]
    def __init__(self, outcome_weight: _Optional[float] = ..., tool_usage_weight: _Optional[float] = ..., verification_weight: _Optional[float] = ..., length_penalty_weight: _Optional[float] = ..., step_budget: _Optional[int] = ..., token_budget: _Optional[int] = ..., custom_functions: _Optional[_Iterable[_Union[WeightedFunction, _Mapping]]] = ...) -> None: ...

class WeightedFunction(_message.Message):
    __slots__ = ("name", "weight", "params_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    params_json: str
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., params_json: _Optional[str] = ...) -> None: ...

class AdvantageConfig(_message.Message):
    __slots__ = ("normalization", "credit_assignment", "gamma", "epsilon")
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    normalization: AdvantageNormalization
    credit_assignment: CreditAssignment
    gamma: float
    epsilon: float
    def __init__(self, normalization: _Optional[_Union[AdvantageNormalization, str]] = ..., credit_assignment: _Optional[_Union[CreditAssignment, str]] = ..., gamma: _Optional[float] = ..., epsilon: _Optional[float] = ...) -> None: ...

class TrajectoryGroup(_message.Message):
    __slots__ = ("group_id", "trajectories", "trajectory_ids")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_IDS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    trajectories: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.Trajectory]
    trajectory_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group_id: _Optional[str] = ..., trajectories: _Optional[_Iterable[_Union[_trajectory_pb2.Trajectory, _Mapping]]] = ..., trajectory_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreGroupsRequest(_message.Message):
    __slots__ = ("groups", "reward", "advantage", "failure_policy")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[TrajectoryGroup]
    reward: RewardSpec
    advantage: AdvantageConfig
    failure_policy: FailurePolicy
    def __init__(self, groups: _Optional[_Iterable[_Union[TrajectoryGroup, _Mapping]]] = ..., reward: _Optional[_Union[RewardSpec, _Mapping]] = ..., advantage: _Optional[_Union[AdvantageConfig, _Mapping]] = ..., failure_policy: _Optional[_Union[FailurePolicy, str]] = ...) -> None: ...

class ScoreGroupsResponse(_message.Message):
    __slots__ = ("groups", "dropped_group_count")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupScore]
    dropped_group_count: int
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupScore, _Mapping]]] = ..., dropped_group_count: _Optional[int] = ...) -> None: ...

class GroupScore(_message.Message):
    __slots__ = ("group_id", "reward_mean", "reward_std", "size", "dropped", "drop_reason", "trajectories", "retry_trajectory_ids")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    REWARD_STD_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DROP_REASON_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_TRAJECTORY_IDS_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    reward_mean: float
    reward_std: float
    size: int
    dropped: bool
    drop_reason: str
    trajectories: _containers.RepeatedCompositeFieldContainer[TrajectoryScore]
    retry_trajectory_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group_id: _Optional[str] = ..., reward_mean: _Optional[float] = ..., reward_std: _Optional[float] = ..., size: _Optional[int] = ..., dropped: _Optional[bool] = ..., drop_reason: _Optional[str] = ..., trajectories: _Optional[_Iterable[_Union[TrajectoryScore, _Mapping]]] = ..., retry_trajectory_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TrajectoryScore(_message.Message):
    __slots__ = ("trajectory_id", "reward", "components", "advantage", "decision_advantages", "dropped", "error")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ADVANTAGES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    reward: float
    components: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.RewardComponent]
    advantage: float
    decision_advantages: _containers.RepeatedScalarFieldContainer[float]
    dropped: bool
    error: _status_pb2.Status
    def __init__(self, trajectory_id: _Optional[str] = ..., reward: _Optional[float] = ..., components: _Optional[_Iterable[_Union[_trajectory_pb2.RewardComponent, _Mapping]]] = ..., advantage: _Optional[float] = ..., decision_advantages: _Optional[_Iterable[float]] = ..., dropped: _Optional[bool] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RewardFunction(_message.Message):
    __slots__ = ("name", "kind", "entry_point", "address", "description", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: RewardFunctionKind
    entry_point: str
    address: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[RewardFunctionKind, str]] = ..., entry_point: _Optional[str] = ..., address: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListRewardFunctionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRewardFunctionsResponse(_message.Message):
    __slots__ = ("functions", "next_page_token")
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[RewardFunction]
    next_page_token: str
    def __init__(self, functions: _Optional[_Iterable[_Union[RewardFunction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RegisterRewardFunctionRequest(_message.Message):
    __slots__ = ("request_id", "function")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    function: RewardFunction
    def __init__(self, request_id: _Optional[str] = ..., function: _Optional[_Union[RewardFunction, _Mapping]] = ...) -> None: ...

class RegisterRewardFunctionResponse(_message.Message):
    __slots__ = ("function",)
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    function: RewardFunction
    def __init__(self, function: _Optional[_Union[RewardFunction, _Mapping]] = ...) -> None: ...
