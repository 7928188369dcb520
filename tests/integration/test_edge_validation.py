"""Bad values are refused at the edge, over gRPC, JSON-RPC and REST, instead of failing later: negative
seeds, GRPO hyper-parameters large enough to overflow an update, unknown JSON fields. An update whose
numbers overflow anyway makes no version, and Decide never serves NaN probabilities.

One suite for the module (every service and the gateway); jobs run with the JSON-RPC tests' idle runner,
so nothing here trains: what is tested is what each edge accepts.
"""

from __future__ import annotations

import math

import grpc
import pytest
import pytest_asyncio
from integration.test_gateway_jsonrpc import SPEC, call, gateway_http, gateway_suite

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2 as pb
from cohort.api.trainer.v1 import trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.learning import OPTION_SEPARATOR, bucket
from cohort.platform.rpc.client import bad_request, error_info

pytestmark = pytest.mark.asyncio(loop_scope="module")

BUCKETS = 16


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory):
    async with gateway_suite(tmp_path_factory.mktemp("edge-validation")) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(suite):
    async with gateway_http(suite) as session:
        yield session


def trainer(suite) -> trainer_pb2_grpc.TrainerServiceStub:
    return trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))


def jobs(suite) -> jobs_pb2_grpc.JobServiceStub:
    return jobs_pb2_grpc.JobServiceStub(suite.context.channels.channel("jobs"))


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def assert_invalid(call, field: str, *texts: str) -> None:
    error = await rpc_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert bad_request(error).field_violations[0].field == field, error.details()
    for text in texts:
        assert text in error.details()


async def new_policy(stub, weights: dict[int, float] | None = None) -> str:
    parameters = []
    if weights:
        values = [0.0] * BUCKETS
        for index, value in weights.items():
            values[index] = value
        parameters = [pb.HeadParameters(head="pick", weights=values)]
    response = await stub.CreatePolicy(
        pb.CreatePolicyRequest(
            heads=[pb.DecisionHead(name="pick", options=["a", "b"], feature_buckets=BUCKETS)],
            initial_parameters=parameters,
        )
    )
    return response.policy.policy_id


def scored(policy_id: str, features: dict[str, float], index: int, advantage: float = 1.0) -> tpb.Trajectory:
    """A trajectory of version 1 with one recorded decision (`a` of a uniform `a`/`b`)."""
    decision = tpb.Decision(
        head="pick",
        options=["a", "b"],
        chosen_index=0,
        chosen="a",
        log_prob=math.log(0.5),
        probabilities=[0.5, 0.5],
        features=features,
        policy=tpb.PolicyRef(policy_id=policy_id, version=1),
    )
    return tpb.Trajectory(
        trajectory_id=f"t-{index}",
        group_id="g",
        policy=tpb.PolicyRef(policy_id=policy_id, version=1),
        decisions=[decision],
        advantage=advantage,
        reward=1.0,
    )


# --- UpdatePolicy and Decide over gRPC


@pytest.mark.parametrize(
    ("config", "field", "bound"),
    [
        (pb.GrpoConfig(learning_rate=1e308), "config.learning_rate", "(0, 10]"),
        (pb.GrpoConfig(learning_rate=10.5), "config.learning_rate", "(0, 10]"),
        (pb.GrpoConfig(kl_beta=1e308), "config.kl_beta", "[0, 1000]"),
        (pb.GrpoConfig(entropy_coefficient=1e308), "config.entropy_coefficient", "[0, 1000]"),
        (pb.GrpoConfig(max_grad_norm=1e308), "config.max_grad_norm", "(0, 1e+06]"),
        (pb.GrpoConfig(seed=-1), "config.seed", ">= 0"),
    ],
)
async def test_update_refuses_hyper_parameters_that_would_overflow(suite, config, field, bound):
    stub = trainer(suite)
    pid = await new_policy(stub)
    trajectories = [scored(pid, {"x": 1.0}, i, 1.0 if i % 2 else -1.0) for i in range(4)]
    request = pb.UpdatePolicyRequest(policy_id=pid, base_version=1, trajectories=trajectories, config=config)
    await assert_invalid(stub.UpdatePolicy(request), field, bound)
    latest = (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid))).policy
    assert latest.latest_version == 1


async def test_an_update_that_overflows_makes_no_version_and_the_previous_stays_current(suite):
    """Settings in range, features of 1e307: after one Adam step of 10 the logits leave float64."""
    stub = trainer(suite)
    pid = await new_policy(stub)
    before = await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, include_parameters=True))
    trajectories = [scored(pid, {"x": 1e307}, i) for i in range(2)]
    request = pb.UpdatePolicyRequest(
        request_id="overflow-1",
        policy_id=pid,
        base_version=1,
        trajectories=trajectories,
        config=pb.GrpoConfig(learning_rate=10, inner_epochs=2),
    )
    error = await rpc_error(stub.UpdatePolicy(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = error_info(error)
    assert info.reason == "NON_FINITE_UPDATE" and info.metadata["quantity"] and info.metadata["epoch"] == "2"
    assert "non-finite update" in error.details() and "no version was made" in error.details()

    after = (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=pid, include_parameters=True))).policy
    assert after.latest_version == 1 and after.parameters_sha256 == before.policy.parameters_sha256
    decision = (await stub.Decide(pb.DecideRequest(policy_id=pid, head="pick", features={"x": 1.0}))).decision
    assert decision.policy.version == 1 and list(decision.probabilities) == [0.5, 0.5]
    # the same update at a sane scale still works: the failure was not remembered as the answer
    sane = [scored(pid, {"x": 1.0}, i) for i in range(2)]
    updated = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(policy_id=pid, base_version=1, trajectories=sane, config=request.config)
    )
    assert updated.policy.version == 2


async def test_decide_refuses_to_serve_non_finite_probabilities(suite):
    stub = trainer(suite)
    crossed = bucket("a" + OPTION_SEPARATOR + "x", BUCKETS)
    pid = await new_policy(stub, {crossed: 1e10})
    await assert_invalid(
        stub.Decide(pb.DecideRequest(policy_id=pid, head="pick", features={"x": 1e300}, seed=1)),
        "features",
        "overflow",
    )
    served = (await stub.Decide(pb.DecideRequest(policy_id=pid, head="pick", features={"x": 1e-12}))).decision
    assert all(math.isfinite(p) for p in served.probabilities)


# --- seeds at CreateJob and EvaluateJob over gRPC


def job_spec(**fields) -> jobs_pb2.JobSpec:
    spec = jobs_pb2.JobSpec()
    spec.runtime.toolbench.SetInParent()
    spec.dataset.toolbench.train_count = 10
    spec.dataset.toolbench.heldout_count = 5
    spec.policy.new_policy.SetInParent()
    spec.iterations = 2
    for path, value in fields.items():
        target = spec
        *parents, name = path.split("__")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)
    return spec


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"seed": -1}, "job.spec.seed"),
        ({"dataset__toolbench__seed": -5}, "job.spec.dataset.toolbench.seed"),
        ({"grpo__seed": -2}, "job.spec.grpo.seed"),
        ({"grpo__learning_rate": 1e300}, "job.spec.grpo.learning_rate"),
        ({"grpo__kl_beta": 5e3}, "job.spec.grpo.kl_beta"),
        ({"grpo__entropy_coefficient": 1e300}, "job.spec.grpo.entropy_coefficient"),
        ({"dataset__batch_sampling": 7}, "job.spec.dataset.batch_sampling"),
    ],
)
async def test_create_job_refuses_negative_seeds_and_overflowing_hyper_parameters(suite, fields, field):
    request = jobs_pb2.CreateJobRequest(job=jobs_pb2.Job(spec=job_spec(**fields)))
    await assert_invalid(jobs(suite).CreateJob(request), field)


async def test_evaluate_job_refuses_a_negative_seed(suite):
    stub = jobs(suite)
    job = (await stub.CreateJob(jobs_pb2.CreateJobRequest(job=jobs_pb2.Job(spec=job_spec())))).job
    await assert_invalid(
        stub.EvaluateJob(jobs_pb2.EvaluateJobRequest(job_id=job.job_id, seed=-1)), "seed", ">= 0"
    )
    evaluated = await stub.EvaluateJob(jobs_pb2.EvaluateJobRequest(job_id=job.job_id, seed=7))
    assert evaluated.evaluation.checkpoint_id  # a valid seed still reaches the runner


# --- the gateway: JSON-RPC


def violations(answer: dict) -> list[str]:
    assert answer["error"]["code"] == -32602, answer
    return [violation["field"] for violation in answer["error"]["data"]["fieldViolations"]]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**SPEC, "seed": "-1"}, "job.spec.seed"),
        ({**SPEC, "dataset": {"toolbench": {"seed": -3}}}, "job.spec.dataset.toolbench.seed"),
        ({**SPEC, "grpo": {"learning_rate": 1e300}}, "job.spec.grpo.learning_rate"),
        ({**SPEC, "grpo": {"klBeta": 1e9}}, "job.spec.grpo.kl_beta"),
        ({**SPEC, "dataset": {"toolbench": {}, "batchSampling": 9}}, "job.spec.dataset.batch_sampling"),
    ],
)
async def test_json_rpc_start_grpo_refuses_bad_values_naming_the_field(http, spec, field):
    answer = await call(http, "training.start_grpo", {"spec": spec})
    assert violations(answer) == [field]
    assert "result" not in answer


async def test_json_rpc_evaluate_refuses_a_negative_seed(http):
    job = (await call(http, "training.start_grpo", {"spec": SPEC}))["result"]["job"]
    answer = await call(http, "training.evaluate", {"job_id": job["jobId"], "seed": -1})
    assert violations(answer) == ["seed"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"spec": {**SPEC, "grup_size": 3}}, "job.spec.grup_size"),
        ({"spec": {**SPEC, "grupSize": 3}}, "job.spec.grupSize"),
        ({"job": {"spec": {**SPEC, "grup_size": 3}}}, "job.spec.grup_size"),
        (
            {"spec": {**SPEC, "dataset": {"toolbench": {"train_cnt": 10}}}},
            "job.spec.dataset.toolbench.train_cnt",
        ),
        (
            {"spec": {**SPEC, "dataset": {"inline": {"train": [{"text": "q"}, {"txt": "q"}]}}}},
            "job.spec.dataset.inline.train[1].txt",
        ),
        ({"spec": SPEC, "grup_size": 3}, "grup_size"),
    ],
)
async def test_json_rpc_refuses_unknown_fields_naming_their_path(http, suite, params, field):
    before = await jobs(suite).ListJobs(jobs_pb2.ListJobsRequest(page_size=1000))
    answer = await call(http, "training.start_grpo", params)
    assert violations(answer) == [field]
    assert field in answer["error"]["message"]
    after = await jobs(suite).ListJobs(jobs_pb2.ListJobsRequest(page_size=1000))
    assert len(after.jobs) == len(before.jobs)  # nothing was started


async def test_json_rpc_unknown_field_gets_a_suggestion_and_valid_params_still_work(http):
    answer = await call(http, "training.start_grpo", {"spec": {**SPEC, "grup_size": 3}})
    assert "did you mean 'group_size'?" in answer["error"]["data"]["fieldViolations"][0]["description"]
    started = await call(
        http, "training.start_grpo", {"spec": {**SPEC, "group_size": 3}, "display_name": "ok"}
    )
    assert started["result"]["job"]["spec"]["groupSize"] == 3
    status = await call(http, "training.get_status", {"job_id": started["result"]["job"]["jobId"]})
    assert status["result"]["job"]["displayName"] == "ok"  # the string fast path is unaffected
    unknown = await call(http, "training.get_status", {"job_id": "x", "jobb": "y"})
    assert violations(unknown) == ["jobb"]


# --- the gateway: REST


async def test_rest_refuses_unknown_fields_naming_their_path(http):
    for body, field in (
        ({"spec": {**SPEC, "grup_size": 3}}, "job.spec.grup_size"),
        (
            {"spec": {**SPEC, "runtime": {"toolbench": {"latency": "1s"}}}},
            "job.spec.runtime.toolbench.latency",
        ),
        ({"spec": SPEC, "colour": "red"}, "job.colour"),
    ):
        async with http.post("/v1/jobs", json=body) as response:
            assert response.status == 400
            status = await response.json()
        assert status["message"].startswith(f"{field}: unknown field"), status
        bad = next(d for d in status["details"] if d["@type"].endswith("BadRequest"))
        assert bad["fieldViolations"][0]["field"] == field
    async with http.post("/v1/jobs", json={"spec": {**SPEC, "groupSize": 3}}) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["job"]["spec"]["groupSize"] == 3


async def test_rest_update_with_a_huge_learning_rate_is_400_naming_the_field(http, suite):
    pid = await new_policy(trainer(suite))
    body = {
        "baseVersion": "1",
        "trajectories": [{"trajectoryId": "t", "advantage": 1.0}],
        "config": {"learningRate": 1e300},
    }
    async with http.post(f"/v1/policies/{pid}:update", json=body) as response:
        assert response.status == 400
        status = await response.json()
    assert status["message"].startswith("config.learning_rate: must be a finite number in (0, 10]")
