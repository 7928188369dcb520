"""Error mappings of the gateway: gRPC status → HTTP status (grpc-gateway's table) and → JSON-RPC code.

Every error the gateway answers with is a `google.rpc.Status`. Statuses from a backend pass through
as the backend sent them (Cohort's servers already keep internals out of them), except that
`INTERNAL`, `UNKNOWN` and `DATA_LOSS` without a Cohort status, and `UNAVAILABLE` raised by the gRPC
client library itself, get a fixed message: those come from the transport and may name hosts,
ports or exception text.
"""

from __future__ import annotations

import grpc
import grpc.aio
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from cohort.platform.errors import ERROR_DOMAIN
from cohort.platform.rpc.client import rich_status
from cohort.platform.rpc.interceptors import REQUEST_ID_KEY

HTTP_STATUS_BY_CODE: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}
"""grpc-gateway's `HTTPStatusFromCode`."""

# JSON-RPC 2.0 codes (section 5.1).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR_BASE = -32000
"""Other gRPC codes become `-32000 - code`: NOT_FOUND (5) is -32005, UNAVAILABLE (14) is -32014."""

INTERNAL_CODES = frozenset({code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.DATA_LOSS})


def http_status_of(code: int) -> int:
    return HTTP_STATUS_BY_CODE.get(code, 500)


def jsonrpc_code_of(code: int) -> int:
    """The JSON-RPC error code for a gRPC status code (OK has none)."""
    if code == code_pb2.INVALID_ARGUMENT:
        return INVALID_PARAMS
    if code in INTERNAL_CODES or code not in HTTP_STATUS_BY_CODE or code == code_pb2.OK:
        return INTERNAL_ERROR
    return SERVER_ERROR_BASE - code


def code_name(code: int) -> str:
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return str(code)


class GatewayError(Exception):
    """An error the gateway itself answers with (bad input, no route, body too large)."""

    def __init__(self, status: status_pb2.Status, http_status: int | None = None) -> None:
        super().__init__(status.message)
        self.status = status
        self.http_status = http_status_of(status.code) if http_status is None else http_status


def make_status(code: int, message: str, *, reason: str | None = None) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if reason:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return status


def invalid_argument(field: str, description: str) -> GatewayError:
    """A 400 naming the field, shaped like the backends' own INVALID_ARGUMENT."""
    message = f"{field}: {description}" if field else description
    status = make_status(code_pb2.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT")
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return GatewayError(status)


def status_of_rpc_error(exc: grpc.aio.AioRpcError, component: str) -> status_pb2.Status:
    """The `google.rpc.Status` of a failed call: the backend's own, or one made from the code."""
    rich = rich_status(exc)
    if rich is not None:
        return rich
    code = exc.code().value[0]
    if code in INTERNAL_CODES:
        return make_status(code, "internal error", reason="INTERNAL")
    if code == code_pb2.UNAVAILABLE:
        return make_status(code, f"the {component} service is unavailable; try again", reason="UNAVAILABLE")
    if code == code_pb2.DEADLINE_EXCEEDED:
        return make_status(
            code, f"the {component} service did not answer in time", reason="DEADLINE_EXCEEDED"
        )
    return make_status(code, exc.details() or code_name(code))


def request_id_of(exc: grpc.aio.AioRpcError) -> str | None:
    for key, value in exc.trailing_metadata() or ():
        if key == REQUEST_ID_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def status_to_json(status: status_pb2.Status) -> dict:
    """Canonical JSON of a Status (`details` as `Any` with `@type`); unknown detail types are dropped."""
    try:
        return json_format.MessageToDict(status, always_print_fields_with_no_presence=True)
    except (TypeError, KeyError, json_format.Error):
        return {"code": status.code, "message": status.message, "details": []}


def field_violations(status: status_pb2.Status) -> list[dict[str, str]]:
    """The `BadRequest` field violations carried by a status, as `{"field", "description"}`."""
    violations: list[dict[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend(
                {"field": v.field, "description": v.description} for v in bad_request.field_violations
            )
    return violations
