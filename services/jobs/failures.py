"""Why a job's attempt failed, as the job's `error` says it, and whether another attempt may help.

A runner fails by raising: a domain error of the job manager, a failed call to another service
(`grpc.aio.AioRpcError`, which a `ChannelPool` marks with the service it called), a database blip,
or a bug. Each becomes a `google.rpc.Status` whose message starts with the service that raised it
and whose `ErrorInfo` metadata carries `service`, so a user reads the real cause, not "internal
error". Requests that are wrong in themselves fail the job at once; anything else is retried from
the latest checkpoint up to the job's `max_attempts`.
"""

from __future__ import annotations

import grpc
import grpc.aio
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cohort.platform.errors import ERROR_DOMAIN, CohortError
from cohort.platform.rpc.client import failed_service, rich_status
from cohort.platform.rpc.interceptors import status_of
from cohort.platform.transient import is_transient
from cohort.services.jobs.spec import DEFAULT_MAX_ATTEMPTS

JOB_MANAGER = "jobs"

FINAL_CODES = frozenset(
    {
        code_pb2.INVALID_ARGUMENT,
        code_pb2.FAILED_PRECONDITION,
        code_pb2.NOT_FOUND,
        code_pb2.ALREADY_EXISTS,
        code_pb2.PERMISSION_DENIED,
        code_pb2.UNAUTHENTICATED,
        code_pb2.OUT_OF_RANGE,
        code_pb2.UNIMPLEMENTED,
    }
)
"""Codes that say the job's own request is wrong: a new attempt would fail the same way."""


def attempt_error(error: BaseException, job_id: str, attempt: int) -> status_pb2.Status:
    """The status a job records for an attempt that raised `error`."""
    if isinstance(error, grpc.aio.AioRpcError):
        service = failed_service(error) or "a service"
        status = rich_status(error) or status_pb2.Status(
            code=error.code().value[0], message=error.details() or error.code().name
        )
    elif isinstance(error, CohortError):
        service, status = JOB_MANAGER, status_of(error)
    elif is_transient(error):
        service = JOB_MANAGER
        status = status_pb2.Status(
            code=code_pb2.UNAVAILABLE, message=f"the job manager's database is unavailable ({error})"
        )
    else:
        service = JOB_MANAGER
        status = status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=f"internal error in attempt {attempt} of job {job_id} (see the job manager's log)",
        )
    return _named(status, service)


def is_final(status: status_pb2.Status) -> bool:
    """Whether another attempt cannot help (the job's own request is wrong)."""
    return status.code in FINAL_CODES


def _named(status: status_pb2.Status, service: str) -> status_pb2.Status:
    """`status` with `service` leading its message and in its ErrorInfo's metadata."""
    named = status_pb2.Status()
    named.CopyFrom(status)
    if not named.message.startswith(f"{service}: "):
        named.message = f"{service}: {named.message}"
    for detail in named.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            info.metadata["service"] = service
            detail.Pack(info)
            return named
    reason = grpc.StatusCode.UNKNOWN.name
    for code in grpc.StatusCode:
        if code.value[0] == named.code:
            reason = code.name
    named.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata={"service": service})
    )
    return named


__all__ = ["DEFAULT_MAX_ATTEMPTS", "attempt_error", "is_final"]
