"""JSON-RPC 2.0 over `POST /jsonrpc`: the `training.*` methods as thin mappings onto the gRPC API.

Params are by name (snake_case as in the original API; the lowerCamelCase JSON names work too) and
map onto the request message of the RPC; a result is the protobuf canonical JSON of the response
message. Positional params have no field names to map, so they are `-32602 Invalid params`.

- training.start_grpo → JobService.CreateJob: `request_id`, and `job` or its fields (`spec`,
  `display_name`, `job_id`);
- training.get_status → JobService.GetJob: `job_id`;
- training.list_jobs → JobService.ListJobs: `states`, `page_size`, `page_token`;
- training.pause / resume / cancel / relaunch → JobService.PauseJob / ResumeJob / CancelJob /
  RelaunchJob: `job_id`, `request_id`;
- training.evaluate → JobService.EvaluateJob: `job_id`, `checkpoint_id`, `queries`, `seed`, `request_id`;
- training.export_trajectories → CollectorService.SearchTrajectories with the FULL view, filtered on
  the job: `job_id`, `page_size`, `page_token`; the result's `nextPageToken` continues the export.

Error codes: -32700 parse error, -32600 invalid request (also an empty batch and a body over the
size limit), -32601 method not found, -32602 invalid params (also a backend INVALID_ARGUMENT; its
`BadRequest` field violations are in `error.data.fieldViolations`), -32603 internal error (nothing
internal in it, only `data.requestId`), and every other gRPC status `-32000 - code` (NOT_FOUND
-32005, FAILED_PRECONDITION -32009, UNAVAILABLE -32014, UNAUTHENTICATED -32016, ...) with the
`google.rpc.Status` in `error.data`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.platform.config import Settings
from cohort.services.gateway import json_codec
from cohort.services.gateway.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    GatewayError,
    field_violations,
    jsonrpc_code_of,
    request_id_of,
    status_of_rpc_error,
    status_to_json,
)
from cohort.services.gateway.transcoding import (
    Backends,
    forwarded_metadata,
    read_body,
    timeout_from,
)

log = logging.getLogger(__name__)

_ABSENT = object()


class InvalidParams(Exception):
    def __init__(self, message: str, violations: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations


def _invalid(field: str, description: str) -> InvalidParams:
    return InvalidParams(
        f"Invalid params: {field}: {description}", [{"field": field, "description": description}]
    )


@dataclass(frozen=True)
class Method:
    name: str
    component: str
    grpc_path: str
    request_class: type[Message]
    response_class: type[Message]
    build: Callable[[dict[str, Any]], Message]


def _names(message_class: type[Message]) -> dict[str, str]:
    """Accepted param name → proto field name (both spellings)."""
    names = {}
    for field in message_class.DESCRIPTOR.fields:
        names[field.name] = field.name
        names[field.json_name] = field.name
    return names


def _check_names(params: dict[str, Any], accepted: dict[str, str]) -> None:
    for key in params:
        if key not in accepted:
            expected = ", ".join(sorted({v for v in accepted.values()}))
            raise _invalid(key, f"unknown parameter; expected {expected}")


def _parse(params: dict[str, Any], message: Message) -> Message:
    try:
        json_codec.parse_into(params, message)
    except GatewayError as error:
        violations = field_violations(error.status)
        raise InvalidParams(f"Invalid params: {error.status.message}", violations) from None
    return message


def _camel(name: str) -> str:
    return name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])


def _require(params: dict[str, Any], *names: str) -> None:
    """A required string param (in either spelling) must be a non-empty string."""
    _require_spelled(params, tuple((name, _camel(name)) for name in names))


def _require_spelled(params: dict[str, Any], spellings: tuple[tuple[str, str], ...]) -> None:
    for name, camel in spellings:
        value = params.get(name, params.get(camel))
        if value is None or value == "":
            raise _invalid(name, "required")


def _string_fields(message_class: type[Message]) -> dict[str, str]:
    """Accepted param name → proto field name, of the singular string fields."""
    return {
        name: field_name
        for name, field_name in _names(message_class).items()
        if (field := message_class.DESCRIPTOR.fields_by_name[field_name]).type == FieldDescriptor.TYPE_STRING
        and not field.is_repeated
    }


def _by_fields(message_class: type[Message], *required: str) -> Callable[[dict[str, Any]], Message]:
    accepted = _names(message_class)
    strings = _string_fields(message_class)
    spellings = tuple((name, _camel(name)) for name in required)

    def build(params: dict[str, Any]) -> Message:
        _check_names(params, accepted)
        _require_spelled(params, spellings)
        # Params that are all ASCII strings for distinct string fields (`{"job_id": ...}`) are set as
        # they are: what `ParseDict` would do, without its walk. Anything else takes the full parser.
        message = message_class()
        values = {}
        for key, value in params.items():
            name = strings.get(key)
            if name is None or name in values or value.__class__ is not str or not value.isascii():
                return _parse(params, message)
            values[name] = value
        for name, value in values.items():
            setattr(message, name, value)
        return message

    return build


_JOB_FIELDS = {"job_id", "jobId", "display_name", "displayName", "spec"}


def _start_grpo(params: dict[str, Any]) -> Message:
    """`job` as in CreateJobRequest, or the job's own fields at the top level."""
    accepted = {**_names(jobs_pb2.CreateJobRequest), **{name: name for name in _JOB_FIELDS}}
    _check_names(params, accepted)
    job_fields = {key: value for key, value in params.items() if key in _JOB_FIELDS}
    if job_fields and "job" in params:
        raise _invalid("job", f"give either 'job' or its fields ({', '.join(sorted(job_fields))}), not both")
    rest = {key: value for key, value in params.items() if key not in _JOB_FIELDS}
    if job_fields:
        rest["job"] = job_fields
    if "job" not in rest:
        raise _invalid("spec", "required: pass the job's 'spec' (or a whole 'job')")
    return _parse(rest, jobs_pb2.CreateJobRequest())


def _export_trajectories(params: dict[str, Any]) -> Message:
    accepted = {
        "job_id": "job_id",
        "jobId": "job_id",
        "page_size": "page_size",
        "pageSize": "page_size",
        "page_token": "page_token",
        "pageToken": "page_token",
    }
    _check_names(params, accepted)
    _require(params, "job_id")
    job_id = params.get("job_id", params.get("jobId"))
    request = collector_pb2.SearchTrajectoriesRequest(view=collector_pb2.TRAJECTORY_VIEW_FULL)
    paging = {accepted[key]: value for key, value in params.items() if accepted[key] != "job_id"}
    _parse({"filter": {"job_id": job_id}, **paging}, request)
    return request


JOBS = "/cohort.api.jobs.v1.JobService/"

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "training.start_grpo",
            "jobs",
            JOBS + "CreateJob",
            jobs_pb2.CreateJobRequest,
            jobs_pb2.CreateJobResponse,
            _start_grpo,
        ),
        Method(
            "training.get_status",
            "jobs",
            JOBS + "GetJob",
            jobs_pb2.GetJobRequest,
            jobs_pb2.GetJobResponse,
            _by_fields(jobs_pb2.GetJobRequest, "job_id"),
        ),
        Method(
            "training.list_jobs",
            "jobs",
            JOBS + "ListJobs",
            jobs_pb2.ListJobsRequest,
            jobs_pb2.ListJobsResponse,
            _by_fields(jobs_pb2.ListJobsRequest),
        ),
        Method(
            "training.pause",
            "jobs",
            JOBS + "PauseJob",
            jobs_pb2.PauseJobRequest,
            jobs_pb2.PauseJobResponse,
            _by_fields(jobs_pb2.PauseJobRequest, "job_id"),
        ),
        Method(
            "training.resume",
            "jobs",
            JOBS + "ResumeJob",
            jobs_pb2.ResumeJobRequest,
            jobs_pb2.ResumeJobResponse,
            _by_fields(jobs_pb2.ResumeJobRequest, "job_id"),
        ),
        Method(
            "training.cancel",
            "jobs",
            JOBS + "CancelJob",
            jobs_pb2.CancelJobRequest,
            jobs_pb2.CancelJobResponse,
            _by_fields(jobs_pb2.CancelJobRequest, "job_id"),
        ),
        Method(
            "training.relaunch",
            "jobs",
            JOBS + "RelaunchJob",
            jobs_pb2.RelaunchJobRequest,
            jobs_pb2.RelaunchJobResponse,
            _by_fields(jobs_pb2.RelaunchJobRequest, "job_id"),
        ),
        Method(
            "training.evaluate",
            "jobs",
            JOBS + "EvaluateJob",
            jobs_pb2.EvaluateJobRequest,
            jobs_pb2.EvaluateJobResponse,
            _by_fields(jobs_pb2.EvaluateJobRequest, "job_id"),
        ),
        Method(
            "training.export_trajectories",
            "collector",
            "/cohort.api.collector.v1.CollectorService/SearchTrajectories",
            collector_pb2.SearchTrajectoriesRequest,
            collector_pb2.SearchTrajectoriesResponse,
            _export_trajectories,
        ),
    )
}


def error_object(code: int, message: str, data: Any = _ABSENT) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not _ABSENT:
        error["data"] = data
    return error


def response_error(request_id: Any, code: int, message: str, data: Any = _ABSENT) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error_object(code, message, data), "id": request_id}


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, (int, float)) and not isinstance(value, bool))
    )


class JsonRpcHandler:
    def __init__(self, backends: Backends, settings_source: Callable[[], Settings]) -> None:
        self.backends = backends
        self._settings = settings_source

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            body = response_error(None, INVALID_REQUEST, "JSON-RPC requests are POSTed to /jsonrpc")
            return _json(body, 405, {"Allow": "POST"})
        settings = self._settings()
        try:
            raw = await read_body(request, settings.gateway_max_body_bytes)
        except GatewayError:
            limit = settings.gateway_max_body_bytes
            message = f"Invalid Request: the body is larger than the limit of {limit} bytes"
            return _json(response_error(None, INVALID_REQUEST, message), 413)
        try:
            document = json_codec.loads(raw)
        except json_codec.BadJson as exc:
            return _json(response_error(None, PARSE_ERROR, f"Parse error: {exc}"))
        try:
            metadata = forwarded_metadata(request.headers)
            deadline = timeout_from(request.headers, settings.rpc_timeout_seconds)
        except GatewayError as error:
            return _json(response_error(None, INVALID_REQUEST, f"Invalid Request: {error.status.message}"))
        if isinstance(document, list):
            if not document:
                return _json(response_error(None, INVALID_REQUEST, "Invalid Request: an empty batch"))
            answers = await asyncio.gather(*(self.call(item, metadata, deadline) for item in document))
            replies = [answer for answer in answers if answer is not None]
            return _json(replies) if replies else web.Response(status=204)
        answer = await self.call(document, metadata, deadline)
        return web.Response(status=204) if answer is None else _json(answer)

    async def call(
        self, item: Any, metadata: tuple[tuple[str, str], ...], deadline: float | None
    ) -> dict[str, Any] | None:
        """The response object of one request, or None for a notification."""
        if not isinstance(item, dict):
            return response_error(None, INVALID_REQUEST, "Invalid Request: not a JSON object")
        is_notification = "id" not in item
        request_id = item.get("id")
        if not _valid_id(request_id):
            return response_error(
                None, INVALID_REQUEST, "Invalid Request: id must be a string, number or null"
            )
        if item.get("jsonrpc") != "2.0":
            return response_error(request_id, INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
        name = item.get("method")
        if not isinstance(name, str):
            return response_error(request_id, INVALID_REQUEST, "Invalid Request: method must be a string")
        params = item.get("params", _ABSENT)
        if params is not _ABSENT and not isinstance(params, (dict, list)):
            return response_error(request_id, INVALID_REQUEST, "Invalid Request: params must be an object")
        answer = await self._dispatch(name, {} if params is _ABSENT else params, metadata, deadline)
        if is_notification:
            return None
        return {"jsonrpc": "2.0", **answer, "id": request_id}

    async def _dispatch(
        self, name: str, params: Any, metadata: tuple[tuple[str, str], ...], deadline: float | None
    ) -> dict[str, Any]:
        method = METHODS.get(name)
        if method is None:
            return {"error": error_object(METHOD_NOT_FOUND, f"Method not found: {name[:100]}")}
        if isinstance(params, list):
            return {
                "error": error_object(
                    INVALID_PARAMS,
                    "Invalid params: positional params are not supported; pass params by name (an object)",
                    {"fieldViolations": [{"field": "params", "description": "must be an object"}]},
                )
            }
        try:
            request = method.build(params)
        except InvalidParams as exc:
            return {"error": error_object(INVALID_PARAMS, exc.message, {"fieldViolations": exc.violations})}
        callable_ = self.backends.callable_for(
            method.component, method.grpc_path, method.request_class, method.response_class, False, False
        )
        try:
            response = await callable_(request, metadata=metadata, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            return {"error": rpc_error(exc, method.component)}
        except Exception:
            log.exception("JSON-RPC %s failed in the gateway", name)
            return {"error": error_object(INTERNAL_ERROR, "Internal error")}
        return {"result": EncodedJson(json_codec.message_json_text(response))}


def rpc_error(exc: grpc.aio.AioRpcError, component: str) -> dict[str, Any]:
    status = status_of_rpc_error(exc, component)
    code = jsonrpc_code_of(status.code)
    if code == INVALID_PARAMS:
        data = {"fieldViolations": field_violations(status), "status": status_to_json(status)}
        return error_object(code, f"Invalid params: {status.message}", data)
    if code == INTERNAL_ERROR:
        request_id = request_id_of(exc)
        return error_object(code, "Internal error", {"requestId": request_id} if request_id else _ABSENT)
    return error_object(code, status.message, status_to_json(status))


class EncodedJson(str):
    """A result already encoded as JSON text, spliced into its response object as it is."""


def _encode_answer(answer: dict[str, Any]) -> str:
    result = answer.get("result")
    if result.__class__ is not EncodedJson:
        return json_codec.dumps(answer)
    return f'{{"jsonrpc":"2.0","result":{result},"id":{json_codec.dumps(answer["id"])}}}'


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response object (or a batch of them) as the HTTP response."""
    if isinstance(value, list):
        text = "[" + ",".join(_encode_answer(answer) for answer in value) + "]"
    else:
        text = _encode_answer(value)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)
