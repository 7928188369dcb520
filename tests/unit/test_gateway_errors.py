"""The gateway's error tables, checked on their own and through a real gateway in front of a fake
gRPC backend that fails with every status code (so the mapping seen by HTTP and JSON-RPC callers is
the one under test, not a dict lookup)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import aiohttp
import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cohort.api.jobs.v1 import jobs_pb2
from cohort.platform.config import Settings
from cohort.services.gateway.errors import http_status_of, jsonrpc_code_of
from cohort.services.gateway.main import start_gateway

# grpc-gateway's HTTPStatusFromCode, written out from its documentation.
HTTP_BY_CODE = [
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DATA_LOSS, 500),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
]

JSONRPC_BY_CODE = [
    (grpc.StatusCode.CANCELLED, -32001),
    (grpc.StatusCode.UNKNOWN, -32603),
    (grpc.StatusCode.INVALID_ARGUMENT, -32602),
    (grpc.StatusCode.DEADLINE_EXCEEDED, -32004),
    (grpc.StatusCode.NOT_FOUND, -32005),
    (grpc.StatusCode.ALREADY_EXISTS, -32006),
    (grpc.StatusCode.PERMISSION_DENIED, -32007),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, -32008),
    (grpc.StatusCode.FAILED_PRECONDITION, -32009),
    (grpc.StatusCode.ABORTED, -32010),
    (grpc.StatusCode.OUT_OF_RANGE, -32011),
    (grpc.StatusCode.UNIMPLEMENTED, -32012),
    (grpc.StatusCode.INTERNAL, -32603),
    (grpc.StatusCode.UNAVAILABLE, -32014),
    (grpc.StatusCode.DATA_LOSS, -32603),
    (grpc.StatusCode.UNAUTHENTICATED, -32016),
]

SECRET = "secret: /etc/cohort/admin.key at 10.0.0.7:5432"


@pytest.mark.parametrize(("code", "http_status"), HTTP_BY_CODE)
def test_http_status_table(code, http_status):
    assert http_status_of(code.value[0]) == http_status


@pytest.mark.parametrize(("code", "jsonrpc_code"), JSONRPC_BY_CODE)
def test_jsonrpc_code_table(code, jsonrpc_code):
    assert jsonrpc_code_of(code.value[0]) == jsonrpc_code
    if jsonrpc_code not in (-32602, -32603):
        assert -32099 <= jsonrpc_code <= -32000  # the range the specification reserves for servers


async def _fail(request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext):
    """Fails with the status code named by `job_id`; `rich:` sends a Cohort-style Status with details."""
    rich, _, name = request.job_id.rpartition(":")
    code = grpc.StatusCode[name]
    if not rich:
        await context.abort(
            code, SECRET if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) else name
        )
    status = status_pb2.Status(code=code.value[0], message=f"{name.lower()} says the backend")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=name, domain="cohort.dev"))
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field="job_id", description="bad shape")
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    await context.abort_with_status(rpc_status.to_status(status))


@pytest.fixture
async def gateway():
    server = grpc.aio.server()
    handlers = {
        "GetJob": grpc.unary_unary_rpc_method_handler(
            _fail,
            request_deserializer=jobs_pb2.GetJobRequest.FromString,
            response_serializer=jobs_pb2.GetJobResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("cohort.api.jobs.v1.JobService", handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The collector's address is a closed port: its calls fail in the client library itself.
    settings = Settings(
        addresses={"jobs": f"127.0.0.1:{port}", "collector": "127.0.0.1:1"}, rpc_timeout_seconds=5
    )
    running = await start_gateway(SimpleNamespace(settings=settings), port=0)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{running.port}") as http:
        yield http
    await running.stop()
    await server.stop(0)


CODES = [code for code, _ in HTTP_BY_CODE]


@pytest.mark.parametrize("rich", [True, False], ids=["cohort-status", "bare-status"])
@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
async def test_a_backend_status_through_rest(gateway, code, rich):
    job_id = f"rich:{code.name}" if rich else code.name
    async with gateway.get(f"/v1/jobs/{job_id}") as response:
        body = await response.json()
        assert response.status == dict(HTTP_BY_CODE)[code]
    assert body["code"] == code.value[0]
    assert SECRET not in json.dumps(body)
    if rich:
        assert body["message"] == f"{code.name.lower()} says the backend"
        assert body["details"][0] == {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": code.name,
            "domain": "cohort.dev",
            "metadata": {},
        }


@pytest.mark.parametrize("rich", [True, False], ids=["cohort-status", "bare-status"])
@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
async def test_a_backend_status_through_jsonrpc(gateway, code, rich):
    job_id = f"rich:{code.name}" if rich else code.name
    request = {"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": job_id}, "id": 7}
    async with gateway.post("/jsonrpc", json=request) as response:
        assert response.status == 200
        answer = await response.json()
    error = answer["error"]
    assert answer["id"] == 7 and error["code"] == dict(JSONRPC_BY_CODE)[code]
    assert SECRET not in json.dumps(answer)
    if error["code"] == -32603:
        assert error["message"] == "Internal error"
        assert "code" not in error.get("data", {})  # nothing of the backend's status
    elif error["code"] == -32602:
        if rich:
            assert error["data"]["fieldViolations"] == [{"field": "job_id", "description": "bad shape"}]
        assert error["data"]["status"]["code"] == 3
    else:
        assert error["data"]["code"] == code.value[0]  # the google.rpc.Status


async def test_an_unreachable_backend_is_503_without_its_address(gateway):
    async with gateway.get("/v1/trajectories/t-1") as response:
        body = await response.json()
        assert response.status == 503
    assert body["code"] == 14 and "127.0.0.1" not in body["message"]
    request = {"jsonrpc": "2.0", "method": "training.export_trajectories", "params": {"job_id": "j"}, "id": 1}
    async with gateway.post("/jsonrpc", json=request) as response:
        answer = await response.json()
    assert answer["error"]["code"] == -32014 and "127.0.0.1" not in json.dumps(answer)
