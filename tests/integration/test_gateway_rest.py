"""grpc-gateway-compatible REST against a running suite: each route family, streams, bad input,
credentials and request ids passing through, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
import pytest_asyncio
from bench.trajectory_store import make_trajectory
from google.protobuf import json_format
from integration.test_gateway_jsonrpc import gateway_http, gateway_suite

from cohort.services.gateway.transcoding import build_routes

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPEC = {
    "runtime": {"toolbench": {}},
    "dataset": {"toolbench": {"trainCount": 10, "heldoutCount": 5}},
    "policy": {"newPolicy": {}},
    "iterations": 3,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gateway-rest")
    async with gateway_suite(directory, gateway_max_body_bytes=64 * 1024) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(suite):
    async with gateway_http(suite) as session:
        yield session


async def create_job(http, name: str = "idle", **query) -> dict:
    async with http.post("/v1/jobs", params=query, json={"spec": SPEC, "displayName": name}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["job"]


def assert_status(body: dict, code: int) -> None:
    """A `google.rpc.Status` in canonical JSON."""
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code and body["message"]
    assert all("@type" in detail for detail in body["details"])


# --- route families


async def test_get_with_a_path_parameter(http):
    job = await create_job(http)
    async with http.get(f"/v1/jobs/{job['jobId']}") as response:
        assert response.status == 200 and response.content_type == "application/json"
        got = (await response.json())["job"]
    assert got["jobId"] == job["jobId"] and got["revision"].isdigit()  # int64 as a string
    async with http.get("/v1/jobs/no-such-job") as response:
        assert response.status == 404
        body = await response.json()
    assert_status(body, 5)
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


async def test_get_with_query_parameters(http):
    for _ in range(3):
        await create_job(http)
    async with http.get("/v1/jobs?pageSize=2&states=STATE_QUEUED&states=STATE_RUNNING") as response:
        assert response.status == 200
        page = await response.json()
    assert len(page["jobs"]) == 2 and page["nextPageToken"]
    assert all(job["state"] in ("STATE_QUEUED", "STATE_RUNNING") for job in page["jobs"])
    query = [("page_size", "1"), ("page_token", page["nextPageToken"])]
    query += [("states", "STATE_QUEUED"), ("states", "STATE_RUNNING")]  # a token belongs to its filter
    async with http.get("/v1/jobs", params=query) as response:
        assert response.status == 200, await response.text()
        following = (await response.json())["jobs"]
    assert len(following) == 1 and following[0]["jobId"] not in {job["jobId"] for job in page["jobs"]}


async def test_post_with_body_star_and_a_path_parameter(http):
    heads = [{"name": "next_tool", "options": ["search", "answer"]}]
    async with http.post(
        "/v1/policies", json={"displayName": "p", "heads": heads, "unknownField": 1}
    ) as response:
        assert response.status == 400  # a typo is never ignored
        assert (await response.json())["message"].startswith("unknownField: unknown field")
    async with http.post("/v1/policies", json={"displayName": "p", "heads": heads}) as response:
        assert response.status == 200, await response.text()
        policy = (await response.json())["policy"]
    policy_id = policy["policyId"]
    request = {"head": "next_tool", "features": {"step": 1.0}, "seed": "7", "policyId": "ignored-by-the-path"}
    async with http.post(f"/v1/policies/{policy_id}:decide", json=request) as response:
        assert response.status == 200, await response.text()
        decision = await response.json()
    decision = decision["decision"]
    assert decision["head"] == "next_tool" and decision["chosen"] in ("search", "answer")
    assert decision["policy"]["policyId"] == policy_id  # the path wins over the body
    assert decision["features"] == {"step": 1.0}
    async with http.get(f"/v1/policies/{policy_id}", params={"includeParameters": "true"}) as response:
        assert response.status == 200
        assert (await response.json())["policy"]["policyId"] == policy_id


async def test_post_with_body_job_takes_the_request_id_from_the_query(http):
    first = await create_job(http, request_id="rest-create-1")
    again = await create_job(http, requestId="rest-create-1")
    assert first["jobId"] == again["jobId"]
    assert first["displayName"] == "idle" and first["spec"]["iterations"] == 3


async def test_watch_streams_each_snapshot_until_the_end(http):
    job = await create_job(http, "tick")
    lines = []
    async with http.get(f"/v1/jobs/{job['jobId']}:watch") as response:
        assert response.status == 200
        async for line in response.content:
            lines.append(json.loads(line))
    snapshots = [line["result"]["job"] for line in lines]
    revisions = [int(s["revision"]) for s in snapshots]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert snapshots[-1]["state"] == "STATE_SUCCEEDED"
    async with http.get(f"/v1/jobs/{job['jobId']}:watch?afterRevision={revisions[-1]}") as response:
        assert response.status == 200
        assert [json.loads(line) async for line in response.content] == []


async def test_a_stream_failing_before_its_first_message_is_an_ordinary_error(http):
    async with http.get("/v1/jobs/nope:watch") as response:
        assert response.status == 404
        assert_status(await response.json(), 5)


async def test_ingest_takes_a_json_array_or_ndjson_and_export_streams(http):
    items = [make_trajectory(i, job_id="job-rest-ingest", trajectory_id=f"rest-{i}") for i in range(4)]
    as_json = [{"trajectory": json_format.MessageToDict(t)} for t in items]
    async with http.post("/v1/trajectories:ingest", json=as_json[:2]) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["storedCount"] == "2"
    ndjson = "\n".join(json.dumps(item) for item in as_json[1:]) + "\n"
    async with http.post("/v1/trajectories:ingest", data=ndjson) as response:
        result = await response.json()
    assert result["storedCount"] == "2" and result["duplicateCount"] == "1"
    request = {"filter": {"jobId": "job-rest-ingest"}, "format": "EXPORT_FORMAT_COHORT_JSONL"}
    async with http.post("/v1/trajectories:export", json=request) as response:
        assert response.status == 200
        records = [json.loads(line)["result"] async for line in response.content]
    assert sorted(r["trajectoryId"] for r in records) == [f"rest-{i}" for i in range(4)]
    async with http.post("/v1/trajectories:ingest", data='{"trajectory": {}}\n{not json') as response:
        assert response.status == 400
        assert (await response.json())["message"].startswith("line 2")


async def test_unknown_path_is_404_and_wrong_verb_is_405(http):
    async with http.get("/v2/nothing/here") as response:
        assert response.status == 404
        assert_status(await response.json(), 5)
    async with http.delete("/v1/jobs") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST"
        assert_status(await response.json(), 12)
    async with http.post("/healthz") as response:
        assert response.status == 405 and response.headers["Allow"] == "GET"


async def test_a_body_over_the_limit_is_413(http, suite):
    big = {"textQuery": "x" * suite.settings.gateway_max_body_bytes}
    async with http.post("/v1/trajectories:search", json=big) as response:
        assert response.status == 413
        body = await response.json()
    assert_status(body, 8)
    assert str(suite.settings.gateway_max_body_bytes) in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/trajectories:search", b"{not json", "body"),
        ("POST", "/v1/trajectories:search", b"[1, 2]", "body"),
        ("POST", "/v1/trajectories:search", b'{"pageSize": "many"}', "pageSize"),
        ("POST", "/v1/trajectories:search", b'{"filter": {"minReward": []}}', "filter.minReward"),
        ("POST", "/v1/jobs", b'{"spec": {"iterations": {"a": 1}}}', "job.spec.iterations"),
        ("GET", "/v1/jobs?pageSize=abc", None, "pageSize"),
        ("GET", "/v1/jobs?states=STATE_BORED", None, "states"),
    ],
)
async def test_bad_input_is_400_naming_the_field(http, method, path, body, field):
    async with http.request(method, path, data=body) as response:
        assert response.status == 400
        status = await response.json()
    assert_status(status, 3)
    violations = [d for d in status["details"] if d["@type"].endswith("BadRequest")][0]["fieldViolations"]
    assert violations[0]["field"] == field


async def test_backend_invalid_argument_keeps_its_field_violations(http):
    async with http.get("/v1/jobs?pageSize=5000") as response:
        assert response.status == 400
        status = await response.json()
    violations = [d for d in status["details"] if d["@type"].endswith("BadRequest")][0]["fieldViolations"]
    assert violations[0]["field"] == "page_size"


# --- credentials, tenant and request id


async def test_the_callers_credentials_are_used_never_the_gateways(suite):
    async with aiohttp.ClientSession(f"http://{suite.address('gateway')}") as anonymous:
        async with anonymous.get("/v1/jobs") as response:
            assert response.status == 401
            body = await response.json()
        assert_status(body, 16)
        async with anonymous.get("/v1/jobs", headers={"Authorization": "Bearer not-a-key"}) as response:
            assert response.status == 401
        async with anonymous.get("/openapi.json") as response:
            assert response.status == 200  # the document itself needs no key


async def test_request_id_and_tenant_pass_through(http):
    headers = {"X-Request-Id": "req-gw-42", "Cohort-Tenant": "acme"}
    async with http.post("/v1/jobs", json={"spec": SPEC, "displayName": "idle"}, headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"] == "req-gw-42"
        job = (await response.json())["job"]
    assert job["tenantId"] == "acme"
    async with http.get(f"/v1/jobs/{job['jobId']}") as response:
        assert response.status == 404  # another tenant's job does not exist for `default`
        assert "X-Request-Id" in response.headers
    async with http.get("/v1/jobs", headers={"X-Request-Id": "caf\u00e9"}) as response:
        assert response.status == 400


# --- OpenAPI and health


async def test_openapi_document(http):
    async with http.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    get_job = paths["/v1/jobs/{job_id}"]["get"]
    assert get_job["parameters"] == [
        {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    list_jobs = {p["name"]: p for p in paths["/v1/jobs"]["get"]["parameters"]}
    assert list_jobs["states"]["schema"]["type"] == "array"
    assert "STATE_RUNNING" in list_jobs["states"]["schema"]["items"]["enum"]
    create = paths["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/cohort.api.jobs.v1.Job"
    }
    assert [p["name"] for p in create["parameters"]] == ["request_id"]
    assert "requestBody" in paths["/v1/policies/{policy_id}:decide"]["post"]
    watch = paths["/v1/jobs/{job_id}:watch"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert set(watch["properties"]) == {"result", "error"}
    schemas = document["components"]["schemas"]
    job = schemas["cohort.api.jobs.v1.Job"]["properties"]
    assert job["revision"]["type"] == "string" and job["revision"]["readOnly"]
    assert job["createTime"]["format"] == "date-time"
    for path_item in paths.values():
        for operation in path_item.values():
            for response in operation["responses"].values():
                for content in response.get("content", {}).values():
                    _assert_refs_resolve(content["schema"], schemas)


def _assert_refs_resolve(schema, schemas, seen=None):
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None:
            name = ref.rsplit("/", 1)[-1]
            assert name in schemas, ref
            if name not in seen:
                seen.add(name)
                _assert_refs_resolve(schemas[name], schemas, seen)
        for value in schema.values():
            _assert_refs_resolve(value, schemas, seen)
    elif isinstance(schema, list):
        for value in schema:
            _assert_refs_resolve(value, schemas, seen)


async def test_healthz_is_unchanged(http):
    async with http.get("/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "SERVING"


async def test_a_client_leaving_a_watch_does_not_hurt_the_gateway(http):
    job = await create_job(http)
    async with http.get(f"/v1/jobs/{job['jobId']}:watch") as response:
        assert response.status == 200
        await response.content.readline()
    await asyncio.sleep(0.05)
    async with http.get(f"/v1/jobs/{job['jobId']}") as response:
        assert response.status == 200


_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


async def test_every_annotated_rpc_is_served_over_rest(http):
    """Each `google.api.http` binding of the protos reaches its gRPC method: with an id that does not
    exist and an empty body, the answer is the backend's (a 200, or a 4xx naming the problem), never
    the gateway's "no route", a 405, an UNIMPLEMENTED or a server error."""
    routes = build_routes()
    assert len(routes) >= 30
    for route in routes:
        path = _TEMPLATE_VARIABLE.sub("no-such-id", route.template.template)
        body = None if route.http_method == "GET" or not route.body else {}
        async with http.request(route.http_method, path, json=body) as response:
            text = await response.text()
        where = f"{route.http_method} {route.template.template} -> {route.grpc_path}"
        assert response.status not in (405, 501) and response.status < 500, (where, response.status, text)
        assert "no route for" not in text, where
