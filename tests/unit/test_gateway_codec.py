"""The gateway's JSON codec and path templates: the fast encoder against `json_format` on every message
type of the API, fields from URL strings, and template matching."""

from __future__ import annotations

import math

import pytest
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from cohort.api.collector.v1 import collector_pb2
from cohort.api.jobs.v1 import jobs_pb2
from cohort.services.gateway.errors import GatewayError
from cohort.services.gateway.json_codec import (
    BadJson,
    dumps,
    loads,
    message_json_text,
    message_to_json,
    parse_into,
    set_from_strings,
)
from cohort.services.gateway.jsonrpc import METHODS, InvalidParams, _parse
from cohort.services.gateway.transcoding import api_modules, build_routes, compile_template, component_of

MESSAGE_CLASSES = sorted(
    {
        cls
        for module in api_modules()
        for cls in (getattr(module, name) for name in module.DESCRIPTOR.message_types_by_name)
    },
    key=lambda cls: cls.DESCRIPTOR.full_name,
)


def _fill(message: Message, depth: int = 0, seed: int = 1) -> Message:
    """Every field populated with a non-default value, nested messages to depth 3."""
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and message.WhichOneof(field.containing_oneof.name):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            name = field.message_type.full_name
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    _fill(getattr(message, field.name)["k"], depth + 1, seed)
                else:
                    getattr(message, field.name)[
                        "k" if value_field.type != FieldDescriptor.TYPE_BOOL else True
                    ] = _scalar(value_field, seed)
                continue
            target = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
            if name == "google.protobuf.Timestamp":
                target.FromSeconds(1_700_000_000 + seed)
            elif name == "google.protobuf.Duration":
                target.FromMilliseconds(1500 + seed)
            elif name == "google.protobuf.Any":
                target.Pack(jobs_pb2.GetJobRequest(job_id=f"j{seed}"))
            elif name.startswith("google.protobuf."):
                target.SetInParent()
            else:
                _fill(target, depth + 1, seed + 1)
            continue
        value = _scalar(field, seed)
        if field.is_repeated:
            getattr(message, field.name).extend([value, value])
        else:
            setattr(message, field.name, value)
    return message


def _scalar(field: FieldDescriptor, seed: int):
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        values = field.enum_type.values
        return values[min(len(values) - 1, 1)].number
    if kind == FieldDescriptor.TYPE_BOOL:
        return True
    if kind == FieldDescriptor.TYPE_STRING:
        return f"s{seed}é"
    if kind == FieldDescriptor.TYPE_BYTES:
        return b"\x00\xffbytes"
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 0.1 + seed
    return 2**40 + seed if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64) else 7 + seed


@pytest.mark.parametrize("message_class", MESSAGE_CLASSES, ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_the_fast_encoder_matches_json_format(message_class):
    for message in (message_class(), _fill(message_class())):
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert message_to_json(message) == expected


@pytest.mark.parametrize("message_class", MESSAGE_CLASSES, ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_the_remembered_json_text_is_the_message_encoded(message_class):
    for message in (message_class(), _fill(message_class()), _fill(message_class(), seed=7)):
        for _ in range(2):  # the first encodes; the second is remembered
            assert message_json_text(message) == dumps(message_to_json(message))


def test_a_changed_response_is_encoded_anew():
    job = jobs_pb2.GetJobResponse(job=jobs_pb2.Job(job_id="j", revision=1))
    first = message_json_text(job)
    job.job.revision = 2
    assert message_json_text(job) != first
    assert '"revision":"2"' in message_json_text(job)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1_700_000_000, 5_000_000), (1_700_000_000, 120_000), (-1, 999_999_999), (-62135596800, 1),
     (253402300799, 999_000_000)],
)  # fmt: skip
def test_timestamps_match_json_format(seconds, nanos):
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert message_to_json(stamp) == stamp.ToJsonString()


def test_out_of_range_timestamps_fail_as_json_format_does():
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        message_to_json(timestamp_pb2.Timestamp(seconds=253402300800))


def test_loads_refuses_a_byte_order_mark_as_json_loads_does():
    with pytest.raises(BadJson, match="BOM"):
        loads("\ufeff{}".encode())


def test_non_finite_doubles_are_strings():
    progress = jobs_pb2.JobProgress(success_rate=math.nan, reward_mean=-math.inf)
    out = message_to_json(progress)
    assert out["successRate"] == "NaN" and out["rewardMean"] == "-Infinity"


def test_parse_rejects_unknown_enum_names():
    request = jobs_pb2.ListJobsRequest()
    parse_into({"pageSize": 3, "states": ["STATE_RUNNING"]}, request)
    assert request.page_size == 3 and list(request.states) == [jobs_pb2.Job.STATE_RUNNING]
    with pytest.raises(GatewayError) as caught:
        parse_into({"states": ["STATE_RUNING"]}, jobs_pb2.ListJobsRequest())
    assert caught.value.http_status == 400 and caught.value.status.message.startswith("states:")


def _violation(error: GatewayError) -> tuple[str, str]:
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in error.status.details)
    (violation,) = bad_request.field_violations
    return violation.field, violation.description


@pytest.mark.parametrize(
    ("message", "value", "where", "field", "text"),
    [
        (
            jobs_pb2.ListJobsRequest(),
            {"pageSize": 3, "whatever": {"x": 1}},
            "",
            "whatever",
            "ListJobsRequest",
        ),
        (
            jobs_pb2.CreateJobRequest(),
            {"job": {"spec": {"grup_size": 3}}},
            "",
            "job.spec.grup_size",
            "group_size",
        ),
        (
            jobs_pb2.CreateJobRequest(),
            {"job": {"spec": {"groupSise": 3}}},
            "",
            "job.spec.groupSise",
            "groupSize",
        ),
        (
            jobs_pb2.CreateJobRequest(),
            {"job": {"spec": {"dataset": {"inline": {"train": [{"text": "a"}, {"text": "b", "txt": "c"}]}}}}},
            "",
            "job.spec.dataset.inline.train[1].txt",
            "Query has no field 'txt'",
        ),
        (
            jobs_pb2.Job(),
            {"spec": {"runtime": {"toolbench": {"x": "1s"}}}},
            "job",
            "job.spec.runtime.toolbench.x",
            "",
        ),
        (jobs_pb2.GetJobRequest(), {"jobId": "j", "extra": 1}, "[2]", "[2].extra", "GetJobRequest"),
    ],
)
def test_parse_rejects_unknown_fields_naming_their_path(message, value, where, field, text):
    with pytest.raises(GatewayError) as caught:
        parse_into(value, message, where=where)
    named, description = _violation(caught.value)
    assert caught.value.http_status == 400 and named == field
    assert description.startswith("unknown field") and text in description
    assert caught.value.status.message.startswith(f"{field}: unknown field")


def test_an_unknown_field_and_a_bad_value_in_one_body_name_the_parser_s_first_complaint():
    with pytest.raises(GatewayError) as caught:
        parse_into({"job": {"spec": {"iterations": "many"}}}, jobs_pb2.CreateJobRequest())
    assert _violation(caught.value)[0] == "job.spec.iterations"


def test_parse_names_the_nested_field():
    with pytest.raises(GatewayError) as caught:
        parse_into({"job": {"spec": {"rolloutTimeout": "soon"}}}, jobs_pb2.CreateJobRequest())
    assert caught.value.status.message.startswith("job.spec.rolloutTimeout:")


@pytest.mark.parametrize("value", [[], "x", 3, None, True])
def test_parse_wants_an_object(value):
    with pytest.raises(GatewayError) as caught:
        parse_into(value, jobs_pb2.GetJobRequest())
    assert caught.value.http_status == 400


@pytest.mark.parametrize("body", [b"{", b"\xff", b"NaN", b"[Infinity]", b"1e400", b"[" * 50_000])
def test_loads_is_strict(body):
    with pytest.raises(BadJson):
        loads(body)


def test_fields_from_strings():
    request = collector_pb2.SearchTrajectoriesRequest()
    set_from_strings(request, "filter.job_id", ["j-1"], strict=False)
    set_from_strings(request, "filter.success", ["true"], strict=False)
    set_from_strings(request, "filter.minReward", ["0.5"], strict=False)
    set_from_strings(
        request, "filter.termination_reasons", ["TERMINATION_REASON_COMPLETED", "2"], strict=False
    )
    set_from_strings(request, "filter.start_time", ["2024-01-02T03:04:05Z"], strict=False)
    set_from_strings(request, "view", ["TRAJECTORY_VIEW_FULL"], strict=False)
    set_from_strings(request, "no_such_field", ["x"], strict=False)  # ignored, as grpc-gateway does
    assert request.filter.job_id == "j-1" and request.filter.success and request.filter.min_reward == 0.5
    assert list(request.filter.termination_reasons) == [1, 2]
    assert request.filter.start_time.seconds == 1704164645
    assert request.view == collector_pb2.TRAJECTORY_VIEW_FULL


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("page_size", ["ten"]),
        ("page_size", ["99999999999"]),
        ("page_size", ["1", "2"]),
        ("view", ["TRAJECTORY_VIEW_HUGE"]),
        ("filter.success", ["maybe"]),
        ("filter.start_time", ["yesterday"]),
        ("page_token.x", ["1"]),
        ("filter.labels", ["a"]),
    ],
)
def test_bad_strings_are_400_naming_the_field(path, values):
    with pytest.raises(GatewayError) as caught:
        set_from_strings(collector_pb2.SearchTrajectoriesRequest(), path, values, strict=False)
    assert caught.value.http_status == 400
    assert caught.value.status.message.startswith(path)


def test_templates():
    watch = compile_template("/v1/jobs/{job_id}:watch")
    assert watch.match("/v1/jobs/j%2F1:watch") == {"job_id": "j/1"}
    assert watch.match("/v1/jobs/j1") is None
    nested = compile_template("/v1/{policy.name=tenants/*/policies/*}/x/**:go")
    assert nested.match("/v1/tenants/a/policies/b/x/c/d:go") == {"policy.name": "tenants/a/policies/b"}
    assert nested.openapi_path == "/v1/{policy.name}/x/**:go"
    assert compile_template("/v1/budget/usage").match("/v1/budget/usage/") is None


def test_every_served_annotated_rpc_has_a_route():
    routes = build_routes()
    served = {(r.service, r.method.name) for r in routes}
    for module in api_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                expected = component_of(service.full_name) is not None
                assert ((service.full_name, method.name) in served) == expected, method.full_name
    assert component_of("cohort.api.identity.v1.ApiKeyService") == "jobs"
    assert component_of("cohort.api.agentruntime.v1.AgentRuntimeService") is None
    watch = next(r for r in routes if r.method.name == "WatchJob")
    get = next(r for r in routes if r.method.name == "GetJob")
    assert routes.index(watch) < routes.index(get)  # the custom verb is tried first


@pytest.mark.parametrize(
    "params",
    [
        {"job_id": "job-1"},
        {"jobId": "job-1"},
        {"job_id": "jöb-1"},
        {"job_id": "job-1", "request_id": "r-1"},
        {"job_id": "job-1", "jobId": "job-2"},
        {"job_id": 5},
        {"job_id": "job-1", "request_id": None},
        {"job_id": ["job-1"]},
        {"job_id": "\ud800"},
    ],
)
def test_string_params_are_set_as_the_full_parser_sets_them(params):
    """The JSON-RPC shortcut for plain string params gives what `parse_into` gives, errors included."""
    for name, request_class in (
        ("training.get_status", jobs_pb2.GetJobRequest),
        ("training.pause", jobs_pb2.PauseJobRequest),
    ):
        accepted = {f.name for f in request_class.DESCRIPTOR.fields} | {
            f.json_name for f in request_class.DESCRIPTOR.fields
        }
        if not set(params) <= accepted:
            continue
        try:
            expected: object = _parse(params, request_class())
        except InvalidParams as exc:
            expected = (exc.message, exc.violations)
        try:
            got: object = METHODS[name].build(params)
        except InvalidParams as exc:
            got = (exc.message, exc.violations)
        assert got == expected
