"""JSON-RPC 2.0 at `POST /jsonrpc` against a running suite: the specification's examples (section 7)
adapted to the `training.*` methods, and every `training.*` method end to end.

Jobs run with `GatewayTestRunner` below (the suite's `job_runner`): the
thing under test is the gateway's mapping, not training. A job named `idle` waits, checking for pause
and cancel; `tick` finishes one iteration per 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest
import pytest_asyncio
from bench.trajectory_store import make_trajectory

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.platform.config import Settings
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult
from cohort.services.suite import start_suite

pytestmark = pytest.mark.asyncio(loop_scope="module")


class GatewayTestRunner:
    def __init__(self, context) -> None:
        self.context = context

    async def run(self, handle: JobHandle) -> RunResult:
        ticking = handle.job.display_name == "tick"
        while True:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            if handle.pause_requested:
                return RunResult(JobOutcome.PAUSED)
            await asyncio.sleep(0.02)
            if ticking:

                def advance(progress: jobs_pb2.JobProgress) -> None:
                    progress.iteration += 1

                await handle.update_progress(advance)
                if handle.job.progress.iteration >= handle.job.spec.iterations:
                    return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job: jobs_pb2.Job, request: jobs_pb2.EvaluateJobRequest) -> jobs_pb2.Evaluation:
        return jobs_pb2.Evaluation(
            checkpoint_id=request.checkpoint_id or "latest",
            iteration=job.progress.iteration,
            success_rate_difference=0.25,
        )


def make_runner(context) -> GatewayTestRunner:
    return GatewayTestRunner(context)


SPEC = {
    "runtime": {"toolbench": {}},
    "dataset": {"toolbench": {"train_count": 10, "heldout_count": 5}},
    "policy": {"new_policy": {}},
    "iterations": 3,
}


@contextlib.asynccontextmanager
async def gateway_suite(data_dir, **overrides):
    """The whole suite, its jobs run by this module's idle/tick runner."""
    settings = Settings(data_dir=data_dir, auth_cache_seconds=0.0, **overrides)
    started = await start_suite(settings, ["all"], ephemeral_ports=True, job_runner=make_runner)
    try:
        yield started
    finally:
        await started.stop(0)


@contextlib.asynccontextmanager
async def gateway_http(suite):
    """An HTTP session to the suite's gateway with the admin key."""
    headers = {"Authorization": f"Bearer {suite.settings.api_key}"}
    async with aiohttp.ClientSession(f"http://{suite.address('gateway')}", headers=headers) as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory):
    async with gateway_suite(tmp_path_factory.mktemp("gateway-jsonrpc")) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(suite):
    async with gateway_http(suite) as session:
        yield session


async def post(http, body, *, raw: bool = False, headers=None) -> tuple[int, object]:
    data = body if raw else json.dumps(body)
    async with http.post("/jsonrpc", data=data, headers=headers) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


async def call(http, method: str, params=None, request_id=1) -> dict:
    body = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        body["params"] = params
    status, answer = await post(http, body)
    assert status == 200
    assert answer["jsonrpc"] == "2.0" and answer["id"] == request_id
    return answer


async def start_job(http, name: str = "idle") -> dict:
    answer = await call(http, "training.start_grpo", {"spec": SPEC, "display_name": name})
    return answer["result"]["job"]


async def wait_for_state(http, job_id: str, *states: str) -> dict:
    for _ in range(250):
        job = (await call(http, "training.get_status", {"job_id": job_id}))["result"]["job"]
        if job["state"] in states:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}; last {job['state']}")


# --- section 7 of the specification


async def test_call_with_named_params(http):
    job = await start_job(http)
    answer = await call(http, "training.get_status", {"job_id": job["jobId"]}, request_id="abc")
    assert answer["result"]["job"]["jobId"] == job["jobId"]
    assert "error" not in answer


async def test_positional_params_are_invalid_params(http):
    job = await start_job(http)
    answer = await call(http, "training.get_status", [job["jobId"]])
    assert answer["error"]["code"] == -32602
    assert "by name" in answer["error"]["message"]
    assert "result" not in answer


async def test_a_notification_is_executed_and_gets_no_response(http):
    job = await start_job(http)
    status, answer = await post(
        http, {"jsonrpc": "2.0", "method": "training.cancel", "params": {"job_id": job["jobId"]}}
    )
    assert (status, answer) == (204, None)
    cancelled = await wait_for_state(http, job["jobId"], "STATE_CANCELLED")
    assert cancelled["state"] == "STATE_CANCELLED"


async def test_a_notification_of_an_unknown_method_gets_no_response(http):
    status, answer = await post(http, {"jsonrpc": "2.0", "method": "training.nothing"})
    assert (status, answer) == (204, None)


async def test_non_existent_method(http):
    answer = await call(http, "training.foobar", request_id="1")
    assert answer["error"]["code"] == -32601


async def test_invalid_json(http):
    status, answer = await post(
        http, b'{"jsonrpc": "2.0", "method": "training.get_status", "params": "bar", "baz]', raw=True
    )
    assert status == 200
    assert answer["error"]["code"] == -32700 and answer["id"] is None


async def test_invalid_request_object(http):
    status, answer = await post(http, {"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert status == 200
    assert answer["error"]["code"] == -32600 and answer["id"] is None


@pytest.mark.parametrize(
    "request_object",
    [
        {"jsonrpc": "1.0", "method": "training.list_jobs", "id": 1},
        {"method": "training.list_jobs", "id": 1},
        {"jsonrpc": "2.0", "method": "training.list_jobs", "params": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "training.list_jobs", "id": True},
        {"jsonrpc": "2.0", "method": "training.list_jobs", "id": {"a": 1}},
        {"jsonrpc": "2.0", "id": 1},
    ],
)
async def test_more_invalid_requests(http, request_object):
    status, answer = await post(http, request_object)
    assert status == 200 and answer["error"]["code"] == -32600
    assert answer["id"] in (1, None)


async def test_batch_invalid_json(http):
    body = (
        b'[{"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": "x"}, "id": "1"},'
        b'{"jsonrpc": "2.0", "method"]'
    )
    status, answer = await post(http, body, raw=True)
    assert status == 200 and answer["error"]["code"] == -32700 and answer["id"] is None


async def test_empty_array(http):
    status, answer = await post(http, [])
    assert status == 200
    assert isinstance(answer, dict) and answer["error"]["code"] == -32600 and answer["id"] is None


async def test_invalid_batch_of_one(http):
    status, answer = await post(http, [1])
    assert status == 200
    assert answer == [{"jsonrpc": "2.0", "error": answer[0]["error"], "id": None}]
    assert answer[0]["error"]["code"] == -32600


async def test_invalid_batch(http):
    status, answer = await post(http, [1, 2, 3])
    assert status == 200 and len(answer) == 3
    assert all(item["error"]["code"] == -32600 and item["id"] is None for item in answer)


async def test_mixed_batch(http):
    job = await start_job(http)
    batch = [
        {"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": job["jobId"]}, "id": "1"},
        {"jsonrpc": "2.0", "method": "training.list_jobs", "params": {"page_size": 2}},
        {"jsonrpc": "2.0", "method": "training.list_jobs", "params": {"pageSize": 1}, "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": "no-such-job"}, "id": 9},
    ]
    status, answer = await post(http, batch)
    assert status == 200 and len(answer) == 5
    by_id = {item["id"]: item for item in answer if item["id"] is not None}
    assert by_id["1"]["result"]["job"]["jobId"] == job["jobId"]
    assert len(by_id["2"]["result"]["jobs"]) == 1
    assert by_id["5"]["error"]["code"] == -32601
    assert by_id[9]["error"]["code"] == -32005  # NOT_FOUND
    assert by_id[9]["error"]["data"]["code"] == 5
    invalid = [item for item in answer if item["id"] is None]
    assert len(invalid) == 1 and invalid[0]["error"]["code"] == -32600


async def test_batch_of_only_notifications(http):
    batch = [
        {"jsonrpc": "2.0", "method": "training.list_jobs", "params": {}},
        {"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": "nope"}},
    ]
    status, answer = await post(http, batch)
    assert (status, answer) == (204, None)


# --- each training.* method


async def test_start_grpo_with_a_whole_job_and_a_request_id_is_idempotent(http):
    params = {"request_id": "gw-start-1", "job": {"spec": SPEC, "displayName": "idle"}}
    first = (await call(http, "training.start_grpo", params))["result"]["job"]
    again = (await call(http, "training.start_grpo", params))["result"]["job"]
    assert first["jobId"] == again["jobId"]
    assert first["state"] == "STATE_QUEUED" and first["revision"] == "1"  # int64 as a string
    assert first["spec"]["iterations"] == 3 and first["spec"]["groupSize"] == 8  # defaults filled in
    assert first["pauseReason"] == "PAUSE_REASON_UNSPECIFIED"  # unpopulated fields are emitted


async def test_start_grpo_names_the_bad_field(http):
    bad = {**SPEC, "iterations": 0}
    answer = await call(http, "training.start_grpo", {"spec": bad})
    assert answer["error"]["code"] == -32602
    fields = [v["field"] for v in answer["error"]["data"]["fieldViolations"]]
    assert any("iterations" in field for field in fields)
    assert answer["error"]["data"]["status"]["code"] == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"spec": {**SPEC, "iterations": "three"}}, "job.spec.iterations"),
        ({"spec": SPEC, "job": {"spec": SPEC}}, "job"),
        ({"spec": SPEC, "colour": "red"}, "colour"),
        ({}, "spec"),
    ],
)
async def test_start_grpo_bad_params(http, params, field):
    answer = await call(http, "training.start_grpo", params)
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["fieldViolations"][0]["field"] == field


async def test_get_status_requires_a_job_id(http):
    answer = await call(http, "training.get_status", {})
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["fieldViolations"] == [{"field": "job_id", "description": "required"}]


async def test_get_status_follows_a_job_to_success(http):
    job = await start_job(http, "tick")
    done = await wait_for_state(http, job["jobId"], "STATE_SUCCEEDED")
    assert done["progress"]["iteration"] == 3


async def test_list_jobs_filters_by_state_and_pages(http):
    for _ in range(3):
        await start_job(http)
    first = (await call(http, "training.list_jobs", {"page_size": 2}))["result"]
    assert len(first["jobs"]) == 2 and first["nextPageToken"]
    second = await call(http, "training.list_jobs", {"page_size": 2, "page_token": first["nextPageToken"]})
    assert {j["jobId"] for j in second["result"]["jobs"]}.isdisjoint({j["jobId"] for j in first["jobs"]})
    cancelled = (await call(http, "training.list_jobs", {"states": ["STATE_CANCELLED"]}))["result"]["jobs"]
    assert all(j["state"] == "STATE_CANCELLED" for j in cancelled)
    answer = await call(http, "training.list_jobs", {"states": ["STATE_BORED"]})
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["fieldViolations"][0]["field"] == "states"


async def test_pause_resume_cancel(http):
    job = await start_job(http)
    job_id = job["jobId"]
    await wait_for_state(http, job_id, "STATE_RUNNING")
    paused = await call(http, "training.pause", {"job_id": job_id, "request_id": "p-1"})
    assert paused["result"]["job"]["jobId"] == job_id
    assert (await wait_for_state(http, job_id, "STATE_PAUSED"))["pauseReason"] == "PAUSE_REASON_REQUESTED"
    resumed = await call(http, "training.resume", {"jobId": job_id})
    assert resumed["result"]["job"]["state"] in ("STATE_QUEUED", "STATE_RUNNING")
    cancelled = await call(http, "training.cancel", {"job_id": job_id})
    assert cancelled["result"]["job"]["state"] in ("STATE_CANCELLING", "STATE_CANCELLED")
    await wait_for_state(http, job_id, "STATE_CANCELLED")
    again = await call(http, "training.resume", {"job_id": job_id})
    assert again["error"]["code"] == -32009  # FAILED_PRECONDITION
    assert again["error"]["data"]["code"] == 9


async def test_concurrent_pollers_see_every_change_made_before_they_asked(http):
    """Identical get_status calls share backend calls (CoalescedRead), but none answers with a job
    read before the request was sent: each poll sent after the cancel was answered sees it."""
    job_id = (await start_job(http))["jobId"]
    await wait_for_state(http, job_id, "STATE_RUNNING")
    polls: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            job = (await call(http, "training.get_status", {"job_id": job_id}))["result"]["job"]
            polls.append((sent, int(job["revision"])))

    pollers = [asyncio.ensure_future(poll()) for _ in range(30)]
    await asyncio.sleep(0.2)
    cancelled = (await call(http, "training.cancel", {"job_id": job_id}))["result"]["job"]
    answered = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*pollers)
    after = [revision for sent, revision in polls if sent > answered]
    assert after, "no poll was sent after the cancel"
    assert min(after) >= int(cancelled["revision"])


async def test_evaluate(http):
    job = await start_job(http)
    answer = await call(
        http, "training.evaluate", {"job_id": job["jobId"], "checkpoint_id": "ck-7", "seed": 3}
    )
    evaluation = answer["result"]["evaluation"]
    assert evaluation["checkpointId"] == "ck-7"
    assert evaluation["successRateDifference"] == 0.25


async def test_export_trajectories_pages_through_a_jobs_trajectories(http):
    job_id = "job-gw-export"
    items = [make_trajectory(i, job_id=job_id, trajectory_id=f"gw-export-{i}") for i in range(5)]
    items.append(make_trajectory(99, job_id="another-job", trajectory_id="gw-export-other"))
    ndjson = "\n".join(json.dumps({"trajectory": _json(t)}) for t in items)
    async with http.post("/v1/trajectories:ingest", data=ndjson) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["storedCount"] == "6"
    seen: list[dict] = []
    token = ""
    for _ in range(5):
        params = {"job_id": job_id, "page_size": 2, **({"page_token": token} if token else {})}
        result = (await call(http, "training.export_trajectories", params))["result"]
        seen += [hit["trajectory"] for hit in result["hits"]]
        token = result["nextPageToken"]
        if not token:
            break
    assert sorted(t["trajectoryId"] for t in seen) == [f"gw-export-{i}" for i in range(5)]
    assert all(t["jobId"] == job_id for t in seen)
    assert all(t["agentSteps"] for t in seen)  # the FULL view
    answer = await call(http, "training.export_trajectories", {"page_size": 2})
    assert answer["error"]["data"]["fieldViolations"][0]["field"] == "job_id"


def _json(message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(message)


# --- transport


async def test_without_authorization_the_backend_refuses(suite):
    async with aiohttp.ClientSession(f"http://{suite.address('gateway')}") as anonymous:
        status, answer = await post(anonymous, {"jsonrpc": "2.0", "method": "training.list_jobs", "id": 1})
    assert status == 200
    assert answer["error"]["code"] == -32016  # UNAUTHENTICATED: the gateway's own key is not used
    assert answer["error"]["data"]["details"][0]["reason"] == "API_KEY_MISSING"


async def test_a_body_over_the_limit_is_413(http, suite):
    limit = suite.settings.gateway_max_body_bytes
    body = json.dumps({"jsonrpc": "2.0", "method": "training.list_jobs", "id": 1, "pad": "x" * limit})
    status, answer = await post(http, body, raw=True)
    assert status == 413
    assert answer["error"]["code"] == -32600 and str(limit) in answer["error"]["message"]


async def test_only_post(http):
    async with http.get("/jsonrpc") as response:
        assert response.status == 405 and response.headers["Allow"] == "POST"
        assert (await response.json())["error"]["code"] == -32600


@pytest.mark.parametrize("body", [b"\xff\xfe", b"NaN", b'{"id": 1e999}', b"", b"[" * 100_000])
async def test_bodies_that_are_not_json_are_parse_errors(http, body):
    status, answer = await post(http, body, raw=True)
    assert status == 200 and answer["error"]["code"] == -32700


async def test_the_export_view_is_full():
    from cohort.services.gateway.jsonrpc import METHODS

    request = METHODS["training.export_trajectories"].build({"job_id": "j", "pageSize": 3})
    assert request.view == collector_pb2.TRAJECTORY_VIEW_FULL
    assert request.filter.job_id == "j" and request.page_size == 3
