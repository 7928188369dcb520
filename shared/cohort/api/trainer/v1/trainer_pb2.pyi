import datetime

from cohort.api.trajectory.v1 import trajectory_pb2 as _trajectory_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_MODE_UNSPECIFIED: _ClassVar[DecisionMode]
    DECISION_MODE_SAMPLE: _ClassVar[DecisionMode]
    DECISION_MODE_GREEDY: _ClassVar[DecisionMode]
DECISION_MODE_UNSPECIFIED: DecisionMode
DECISION_MODE_SAMPLE: DecisionMode
DECISION_MODE_GREEDY: DecisionMode

class Policy(_message.Message):
    __slots__ = ("policy_id", "tenant_id", "display_name", "version", "parent_version", "heads", "parameters_sha256", "parameters", "create_time", "latest_version")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_SHA256_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    tenant_id: str
    display_name: str
    version: int
    parent_version: int
    heads: _containers.RepeatedCompositeFieldContainer[DecisionHead]
    parameters_sha256: str
    parameters: _containers.RepeatedCompositeFieldContainer[HeadParameters]
    create_time: _timestamp_pb2.Timestamp
    latest_version: int
    def __init__(self, policy_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., display_name: _Optional[str] = ..., version: _Optional[int] = ..., parent_version: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[DecisionHead, _Mapping]]] = ..., parameters_sha256: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[HeadParameters, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_version: _Optional[int] = ...) -> None: ...

class DecisionHead(_message.Message):
    __slots__ = ("name", "options", "feature_buckets", "temperature", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    options: _containers.RepeatedScalarFieldContainer[str]
    feature_buckets: int
    temperature: float
    description: str
    def __init__(self, name: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., feature_buckets: _Optional[int] = ..., temperature: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class HeadParameters(_message.Message):
    __slots__ = ("head", "weights")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    head: str
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, head: _Optional[str] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("request_id", "policy_id", "display_name", "heads", "initial_parameters")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    policy_id: str
    display_name: str
    heads: _containers.RepeatedCompositeFieldContainer[DecisionHead]
    initial_parameters: _containers.RepeatedCompositeFieldContainer[HeadParameters]
    def __init__(self, request_id: _Optional[str] = ..., policy_id: _Optional[str] = ..., display_name: _Optional[str] = ..., heads: _Optional[_Iterable[_Union[DecisionHead, _Mapping]]] = ..., initial_parameters: _Optional[_Iterable[_Union[HeadParameters, _Mapping]]] = ...) -> None: ...

class CreatePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("policy_id", "version", "include_parameters")
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    version: int
    include_parameters: bool
    def __init__(self, policy_id: _Optional[str] = ..., version: _Optional[int] = ..., include_parameters: _Optional[bool] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("policy_id", "version", "head", "features", "options", "option_features", "mode", "seed", "exploration")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OPTION_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    version: int
    head: str
    features: _containers.ScalarMap[str, float]
    options: _containers.RepeatedScalarFieldContainer[str]
    option_features: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.FeatureMap]
    mode: DecisionMode
    seed: int
    exploration: float
    def __init__(self, policy_id: _Optional[str] = ..., version: _Optional[int] = ..., head: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ..., options: _Optional[_Iterable[str]] = ..., option_features: _Optional[_Iterable[_Union[_trajectory_pb2.FeatureMap, _Mapping]]] = ..., mode: _Optional[_Union[DecisionMode, str]] = ..., seed: _Optional[int] = ..., exploration: _Optional[float] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _trajectory_pb2.Decision
    def __init__(self, decision: _Optional[_Union[_trajectory_pb2.Decision, _Mapping]] = ...) -> None: ...

class GrpoConfig(_message.Message):
    __slots__ = ("learning_rate", "clip_epsilon_low", "clip_epsilon_high", "kl_beta", "entropy_coefficient", "inner_epochs", "max_grad_norm", "positive_advantage_only", "max_policy_staleness", "adam_beta1", "adam_beta2", "seed")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CLIP_EPSILON_LOW_FIELD_NUMBER: _ClassVar[int]
    CLIP_EPSILON_HIGH_FIELD_NUMBER: _ClassVar[int]
    KL_BETA_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    INNER_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_ADVANTAGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_POLICY_STALENESS_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA1_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA2_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    clip_epsilon_low: float
    clip_epsilon_high: float
    kl_beta: float
    entropy_coefficient: float
    inner_epochs: int
    max_grad_norm: float
    positive_advantage_only: bool
    max_policy_staleness: int
    adam_beta1: float
    adam_beta2: float
    seed: int
    def __init__(self, learning_rate: _Optional[float] = ..., clip_epsilon_low: _Optional[float] = ..., clip_epsilon_high: _Optional[float] = ..., kl_beta: _Optional[float] = ..., entropy_coefficient: _Optional[float] = ..., inner_epochs: _Optional[int] = ..., max_grad_norm: _Optional[float] = ..., positive_advantage_only: _Optional[bool] = ..., max_policy_staleness: _Optional[int] = ..., adam_beta1: _Optional[float] = ..., adam_beta2: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class UpdatePolicyRequest(_message.Message):
    __slots__ = ("request_id", "policy_id", "base_version", "trajectories", "config", "reference_version", "optimizer_state")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    policy_id: str
    base_version: int
    trajectories: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.Trajectory]
    config: GrpoConfig
    reference_version: int
    optimizer_state: OptimizerState
    def __init__(self, request_id: _Optional[str] = ..., policy_id: _Optional[str] = ..., base_version: _Optional[int] = ..., trajectories: _Optional[_Iterable[_Union[_trajectory_pb2.Trajectory, _Mapping]]] = ..., config: _Optional[_Union[GrpoConfig, _Mapping]] = ..., reference_version: _Optional[int] = ..., optimizer_state: _Optional[_Union[OptimizerState, _Mapping]] = ...) -> None: ...

class OptimizerState(_message.Message):
    __slots__ = ("step", "first_moments", "second_moments")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FIRST_MOMENTS_FIELD_NUMBER: _ClassVar[int]
    SECOND_MOMENTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    first_moments: _containers.RepeatedCompositeFieldContainer[HeadParameters]
    second_moments: _containers.RepeatedCompositeFieldContainer[HeadParameters]
    def __init__(self, step: _Optional[int] = ..., first_moments: _Optional[_Iterable[_Union[HeadParameters, _Mapping]]] = ..., second_moments: _Optional[_Iterable[_Union[HeadParameters, _Mapping]]] = ...) -> None: ...

class UpdatePolicyResponse(_message.Message):
    __slots__ = ("policy", "metrics", "optimizer_state", "rejected")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    metrics: UpdateMetrics
    optimizer_state: OptimizerState
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedTrajectory]
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ..., metrics: _Optional[_Union[UpdateMetrics, _Mapping]] = ..., optimizer_state: _Optional[_Union[OptimizerState, _Mapping]] = ..., rejected: _Optional[_Iterable[_Union[RejectedTrajectory, _Mapping]]] = ...) -> None: ...

class RejectedTrajectory(_message.Message):
    __slots__ = ("trajectory_id", "reason")
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    reason: str
    def __init__(self, trajectory_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UpdateMetrics(_message.Message):
    __slots__ = ("loss", "kl", "entropy", "clip_fraction", "grad_norm", "grad_norm_clipped", "reward_mean", "reward_std", "groups_used", "groups_dropped", "decisions", "trajectories_used", "update_norm")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    CLIP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_CLIPPED_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    REWARD_STD_FIELD_NUMBER: _ClassVar[int]
    GROUPS_USED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_USED_FIELD_NUMBER: _ClassVar[int]
    UPDATE_NORM_FIELD_NUMBER: _ClassVar[int]
    loss: float
    kl: float
    entropy: float
    clip_fraction: float
    grad_norm: float
    grad_norm_clipped: float
    reward_mean: float
    reward_std: float
    groups_used: int
    groups_dropped: int
    decisions: int
    trajectories_used: int
    update_norm: float
    def __init__(self, loss: _Optional[float] = ..., kl: _Optional[float] = ..., entropy: _Optional[float] = ..., clip_fraction: _Optional[float] = ..., grad_norm: _Optional[float] = ..., grad_norm_clipped: _Optional[float] = ..., reward_mean: _Optional[float] = ..., reward_std: _Optional[float] = ..., groups_used: _Optional[int] = ..., groups_dropped: _Optional[int] = ..., decisions: _Optional[int] = ..., trajectories_used: _Optional[int] = ..., update_norm: _Optional[float] = ...) -> None: ...
