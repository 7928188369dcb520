"""Domain errors: raised by domain code, mapped to gRPC status codes in one place.

Domain code raises these and never touches a gRPC context. `cohort.platform.rpc.interceptors` turns each one
into its status code with a `google.rpc.Status` carrying an `ErrorInfo` (reason, domain, metadata)
and, for `InvalidArgument`, a `BadRequest` naming the field. Anything else becomes `INTERNAL` with
no internals in the message.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "cohort.dev"


class CohortError(Exception):
    """Base of every error a client is meant to see."""

    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(CohortError):
    """A request field is missing, malformed or out of range; `field` names it (dotted path)."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, **kwargs) -> None:
        super().__init__(f"{field}: {message}" if field else message, **kwargs)
        self.field = field
        self.description = message
        self.metadata.setdefault("field", field)


class NotFound(CohortError):
    """The resource does not exist, or belongs to another tenant (never said which)."""

    status_code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(CohortError):
    status_code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(CohortError):
    """The request is valid but the resource's state forbids it (an illegal state transition)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(CohortError):
    """A concurrency conflict (a lost lease, a stale fencing token); the caller may retry."""

    status_code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(CohortError):
    """A quota or budget is used up."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(CohortError):
    status_code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(CohortError):
    status_code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(CohortError):
    status_code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class NotImplementedYet(CohortError):
    """An RPC of the v1 contract whose implementation has not landed yet."""

    status_code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED_YET"
