from cohort.api.trajectory.v1 import trajectory_pb2 as _trajectory_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("function_name", "trajectory", "params_json")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    trajectory: _trajectory_pb2.Trajectory
    params_json: str
    def __init__(self, function_name: _Optional[str] = ..., trajectory: _Optional[_Union[_trajectory_pb2.Trajectory, _Mapping]] = ..., params_json: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("reward", "components", "detail")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reward: float
    components: _containers.RepeatedCompositeFieldContainer[_trajectory_pb2.RewardComponent]
    detail: str
    def __init__(self, reward: _Optional[float] = ..., components: _Optional[_Iterable[_Union[_trajectory_pb2.RewardComponent, _Mapping]]] = ..., detail: _Optional[str] = ...) -> None: ...
