import datetime

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

class MetricDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_DIRECTION_UNSPECIFIED: _ClassVar[MetricDirection]
    METRIC_DIRECTION_MAXIMIZE: _ClassVar[MetricDirection]
    METRIC_DIRECTION_MINIMIZE: _ClassVar[MetricDirection]
METRIC_DIRECTION_UNSPECIFIED: MetricDirection
METRIC_DIRECTION_MAXIMIZE: MetricDirection
METRIC_DIRECTION_MINIMIZE: MetricDirection

class Checkpoint(_message.Message):
    __slots__ = ("checkpoint_id", "tenant_id", "job_id", "iteration", "policy_id", "policy_version", "metrics", "files", "size_bytes", "manifest_sha256", "create_time", "cumulative_cost_micro_usd")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    tenant_id: str
    job_id: str
    iteration: int
    policy_id: str
    policy_version: int
    metrics: _containers.ScalarMap[str, float]
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFileInfo]
    size_bytes: int
    manifest_sha256: str
    create_time: _timestamp_pb2.Timestamp
    cumulative_cost_micro_usd: int
    def __init__(self, checkpoint_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., job_id: _Optional[str] = ..., iteration: _Optional[int] = ..., policy_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., files: _Optional[_Iterable[_Union[CheckpointFileInfo, _Mapping]]] = ..., size_bytes: _Optional[int] = ..., manifest_sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cumulative_cost_micro_usd: _Optional[int] = ...) -> None: ...

class CheckpointFileInfo(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class CheckpointFile(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: bytes
    def __init__(self, name: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("keep_best", "metric", "direction")
    KEEP_BEST_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    keep_best: int
    metric: str
    direction: MetricDirection
    def __init__(self, keep_best: _Optional[int] = ..., metric: _Optional[str] = ..., direction: _Optional[_Union[MetricDirection, str]] = ...) -> None: ...

class SaveCheckpointRequest(_message.Message):
    __slots__ = ("request_id", "job_id", "iteration", "policy_id", "policy_version", "metrics", "files", "retention", "cumulative_cost_micro_usd")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    iteration: int
    policy_id: str
    policy_version: int
    metrics: _containers.ScalarMap[str, float]
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFile]
    retention: RetentionPolicy
    cumulative_cost_micro_usd: int
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., iteration: _Optional[int] = ..., policy_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., files: _Optional[_Iterable[_Union[CheckpointFile, _Mapping]]] = ..., retention: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., cumulative_cost_micro_usd: _Optional[int] = ...) -> None: ...

class SaveCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "deleted_checkpoint_ids")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DELETED_CHECKPOINT_IDS_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    deleted_checkpoint_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., deleted_checkpoint_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id", "include_files")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    include_files: bool
    def __init__(self, checkpoint_id: _Optional[str] = ..., include_files: _Optional[bool] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "files")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFile]
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., files: _Optional[_Iterable[_Union[CheckpointFile, _Mapping]]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetLatestCheckpointRequest(_message.Message):
    __slots__ = ("job_id", "include_files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_files: bool
    def __init__(self, job_id: _Optional[str] = ..., include_files: _Optional[bool] = ...) -> None: ...

class GetLatestCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "files", "skipped")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFile]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedCheckpoint]
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., files: _Optional[_Iterable[_Union[CheckpointFile, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedCheckpoint, _Mapping]]] = ...) -> None: ...

class SkippedCheckpoint(_message.Message):
    __slots__ = ("checkpoint_id", "reason")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    reason: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteCheckpointRequest(_message.Message):
    __slots__ = ("request_id", "checkpoint_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    checkpoint_id: str
    def __init__(self, request_id: _Optional[str] = ..., checkpoint_id: _Optional[str] = ...) -> None: ...

class DeleteCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...
