import datetime

from google.api import annotations_pb2 as _annotations_pb2
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

class LimitScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_SCOPE_UNSPECIFIED: _ClassVar[LimitScope]
    LIMIT_SCOPE_TENANT_MONTHLY: _ClassVar[LimitScope]
    LIMIT_SCOPE_JOB: _ClassVar[LimitScope]

class ReservationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATE_UNSPECIFIED: _ClassVar[ReservationState]
    RESERVATION_STATE_ACTIVE: _ClassVar[ReservationState]
    RESERVATION_STATE_COMMITTED: _ClassVar[ReservationState]
    RESERVATION_STATE_RELEASED: _ClassVar[ReservationState]
    RESERVATION_STATE_EXPIRED: _ClassVar[ReservationState]
LIMIT_SCOPE_UNSPECIFIED: LimitScope
LIMIT_SCOPE_TENANT_MONTHLY: LimitScope
LIMIT_SCOPE_JOB: LimitScope
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_ACTIVE: ReservationState
RESERVATION_STATE_COMMITTED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState

class ModelUsage(_message.Message):
    __slots__ = ("model", "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    reasoning_tokens: int
    def __init__(self, model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class EstimateRequest(_message.Message):
    __slots__ = ("job_id", "usage", "cost_micro_usd")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    usage: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    cost_micro_usd: int
    def __init__(self, job_id: _Optional[str] = ..., usage: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., cost_micro_usd: _Optional[int] = ...) -> None: ...

class EstimateResponse(_message.Message):
    __slots__ = ("cost_micro_usd", "remaining_micro_usd", "fits", "limiting_scope")
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    LIMITING_SCOPE_FIELD_NUMBER: _ClassVar[int]
    cost_micro_usd: int
    remaining_micro_usd: int
    fits: bool
    limiting_scope: LimitScope
    def __init__(self, cost_micro_usd: _Optional[int] = ..., remaining_micro_usd: _Optional[int] = ..., fits: _Optional[bool] = ..., limiting_scope: _Optional[_Union[LimitScope, str]] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "tenant_id", "job_id", "amount_micro_usd", "spent_micro_usd", "state", "expire_time", "create_time")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    tenant_id: str
    job_id: str
    amount_micro_usd: int
    spent_micro_usd: int
    state: ReservationState
    expire_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, reservation_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., job_id: _Optional[str] = ..., amount_micro_usd: _Optional[int] = ..., spent_micro_usd: _Optional[int] = ..., state: _Optional[_Union[ReservationState, str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("request_id", "job_id", "amount_micro_usd", "ttl")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    amount_micro_usd: int
    ttl: _duration_pb2.Duration
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ..., amount_micro_usd: _Optional[int] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("request_id", "reservation_id", "usage", "cost_micro_usd")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    usage: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    cost_micro_usd: int
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., usage: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., cost_micro_usd: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("reservation", "limit_exceeded", "limiting_scope", "over_limit_micro_usd", "remaining_micro_usd")
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    LIMITING_SCOPE_FIELD_NUMBER: _ClassVar[int]
    OVER_LIMIT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    limit_exceeded: bool
    limiting_scope: LimitScope
    over_limit_micro_usd: int
    remaining_micro_usd: int
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ..., limit_exceeded: _Optional[bool] = ..., limiting_scope: _Optional[_Union[LimitScope, str]] = ..., over_limit_micro_usd: _Optional[int] = ..., remaining_micro_usd: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("request_id", "reservation_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: Reservation
    def __init__(self, reservation: _Optional[_Union[Reservation, _Mapping]] = ...) -> None: ...

class ReleaseJobReservationsRequest(_message.Message):
    __slots__ = ("request_id", "job_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    job_id: str
    def __init__(self, request_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ReleaseJobReservationsResponse(_message.Message):
    __slots__ = ("reservations", "released_micro_usd")
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    reservations: _containers.RepeatedCompositeFieldContainer[Reservation]
    released_micro_usd: int
    def __init__(self, reservations: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., released_micro_usd: _Optional[int] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("job_id", "month")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    month: str
    def __init__(self, job_id: _Optional[str] = ..., month: _Optional[str] = ...) -> None: ...

class UsageSummary(_message.Message):
    __slots__ = ("scope", "limit_micro_usd", "spent_micro_usd", "reserved_micro_usd", "remaining_micro_usd", "usage")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    scope: LimitScope
    limit_micro_usd: int
    spent_micro_usd: int
    reserved_micro_usd: int
    remaining_micro_usd: int
    usage: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    def __init__(self, scope: _Optional[_Union[LimitScope, str]] = ..., limit_micro_usd: _Optional[int] = ..., spent_micro_usd: _Optional[int] = ..., reserved_micro_usd: _Optional[int] = ..., remaining_micro_usd: _Optional[int] = ..., usage: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("month", "tenant", "job")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    month: str
    tenant: UsageSummary
    job: UsageSummary
    def __init__(self, month: _Optional[str] = ..., tenant: _Optional[_Union[UsageSummary, _Mapping]] = ..., job: _Optional[_Union[UsageSummary, _Mapping]] = ...) -> None: ...

class SetLimitRequest(_message.Message):
    __slots__ = ("request_id", "scope", "job_id", "limit_micro_usd")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scope: LimitScope
    job_id: str
    limit_micro_usd: int
    def __init__(self, request_id: _Optional[str] = ..., scope: _Optional[_Union[LimitScope, str]] = ..., job_id: _Optional[str] = ..., limit_micro_usd: _Optional[int] = ...) -> None: ...

class SetLimitResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: UsageSummary
    def __init__(self, usage: _Optional[_Union[UsageSummary, _Mapping]] = ...) -> None: ...
