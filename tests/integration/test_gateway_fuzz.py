"""Fuzzing the gateway: arbitrary JSON values and bytes at `/jsonrpc` and at REST routes of a running
suite must never produce a server error or a stack trace.

Allowed 5xx: 501 (UNIMPLEMENTED: an RPC whose implementation has not landed) and 503 (UNAVAILABLE: a
backend's own dependency is down) are the backends speaking, legitimately, about themselves; 500
(INTERNAL/UNKNOWN), 502 and 504 would mean a crash or a hang somewhere on the path, the bug this test
looks for. The JSON-RPC endpoint answers every POST with 200, 204 or 413.

The suite runs on its own event loop in a thread, so hypothesis drives it from a plain test.
"""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohort.platform.config import Settings
from cohort.services.suite import start_suite

ALLOWED_5XX = {501, 503}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

FIELD_NAMES = st.sampled_from(
    [
        "jsonrpc",
        "method",
        "params",
        "id",
        "job_id",
        "jobId",
        "spec",
        "page_size",
        "pageSize",
        "states",
        "filter",
    ]
)
METHOD_NAMES = st.sampled_from(
    [
        "training.start_grpo",
        "training.get_status",
        "training.list_jobs",
        "training.export_trajectories",
        "training.evaluate",
        "training.pause",
        "training.nothing",
    ]
)
request_objects = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]), "method": METHOD_NAMES},
    optional={
        "params": st.dictionaries(FIELD_NAMES, json_values, max_size=4) | json_values,
        "id": st.none() | st.integers() | st.text(max_size=5) | json_values,
    },
)
jsonrpc_bodies = st.one_of(
    request_objects.map(lambda value: json.dumps(value).encode()),
    st.lists(request_objects, max_size=4).map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)

# Routes whose calls do no heavy work whatever the body (no rollouts are started).
REST_TARGETS = st.sampled_from(
    [
        ("POST", "/v1/trajectories:search"),
        ("POST", "/v1/budget:estimate"),
        ("POST", "/v1/policies/p-fuzz:decide"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/j-fuzz:pause"),
        ("POST", "/v1/rewards:scoreGroups"),
        ("POST", "/v1/trajectories:ingest"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/policies"),
        ("GET", "/v1/checkpoints"),
        ("PATCH", "/v1/jobs"),
    ]
)
query_strings = st.dictionaries(
    st.sampled_from(["pageSize", "page_size", "states", "pageToken", "job_id", "x.y", "includeRevoked"]),
    st.text(max_size=12),
    max_size=3,
)
rest_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(FIELD_NAMES, json_values, max_size=4).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)


class BackgroundSuite:
    """A suite and an HTTP session on an event loop of their own."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.suite = self.run(start_suite(settings, ["all"], ephemeral_ports=True))
        self.session = self.run(self._session())

    async def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.suite.settings.api_key}"}
        return aiohttp.ClientSession(f"http://{self.suite.address('gateway')}", headers=headers)

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def request(self, method: str, path: str, body: bytes | None, params=None) -> tuple[int, bytes]:
        async def send():
            async with self.session.request(method, path, data=body, params=params) as response:
                return response.status, await response.read()

        return self.run(send())

    def close(self) -> None:
        self.run(self.session.close())
        self.run(self.suite.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    started = BackgroundSuite(
        Settings(data_dir=tmp_path_factory.mktemp("gateway-fuzz"), auth_cache_seconds=0.0)
    )
    yield started
    started.close()


def _assert_no_stack_trace(body: bytes) -> None:
    assert b"Traceback" not in body and b'File "' not in body


@settings(max_examples=110, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=jsonrpc_bodies)
def test_jsonrpc_never_fails_on_input(background, body):
    status, answer = background.request("POST", "/jsonrpc", body)
    assert status in (200, 204), (status, answer[:300])
    _assert_no_stack_trace(answer)
    if status == 200:
        document = json.loads(answer)
        for reply in document if isinstance(document, list) else [document]:
            assert reply["jsonrpc"] == "2.0" and ("result" in reply) != ("error" in reply)
            if "error" in reply:
                assert reply["error"]["code"] in (-32700, -32600, -32601, -32602, -32603) or (
                    -32099 <= reply["error"]["code"] <= -32000
                )
                assert reply["error"]["code"] != -32603, reply


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=REST_TARGETS, body=rest_bodies, query=query_strings)
def test_rest_never_fails_on_input(background, target, body, query):
    method, path = target
    status, answer = background.request(method, path, body if method != "GET" else None, params=query)
    assert status < 500 or status in ALLOWED_5XX, (status, answer[:300])
    _assert_no_stack_trace(answer)
    if status >= 400:
        error = json.loads(answer)
        assert set(error) == {"code", "message", "details"}, error
