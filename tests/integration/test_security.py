"""Who may do what, end to end: Python runtimes (import nothing unless allowed), tenant limits, and a
suite that survives the revocation of any person's key (service credential, last admin key, CLI
recovery, key log lines). Over gRPC, REST and JSON-RPC against a real suite."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid

import aiohttp
import grpc
import pytest
from suite_calls import rpc_error, tenant_key

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform.config import ConfigError, Settings
from cohort.platform.identity import parse_api_key
from cohort.platform.rpc.client import error_info
from cohort.services.identity.service import SERVICE_KEY_NAME

pytestmark = pytest.mark.timeout(180)

UNTRUSTED = "agents.untrusted_agent"
ENTRY_POINT = f"{UNTRUSTED}:agent"
COHORT = [sys.executable, "-m", "cohort.cli"]


def settings_for(tmp_path, **overrides) -> Settings:
    return Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0, **overrides)


@pytest.fixture
def forget_untrusted():
    """The untrusted module is not imported when the test starts (nor left imported after it)."""
    sys.modules.pop(UNTRUSTED, None)
    yield
    sys.modules.pop(UNTRUSTED, None)


def bearer(secret: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {secret}"),)


def collect_request(entry_point: str = ENTRY_POINT) -> cpb.CollectGroupRequest:
    return cpb.CollectGroupRequest(
        runtime=cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point=entry_point)),
        query=cpb.Query(query_id=f"q-{uuid.uuid4().hex[:8]}", text="anything"),
        group_size=2,
    )


HEAD = trainer_pb2.DecisionHead(name="next", options=["a", "b"])


def python_job(entry_point: str = ENTRY_POINT) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        display_name="python",
        spec=jobs_pb2.JobSpec(
            runtime=cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point=entry_point)),
            dataset=jobs_pb2.DatasetSpec(toolbench=jobs_pb2.ToolbenchQueries(train_count=4, heldout_count=2)),
            policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy(heads=[HEAD])),
            iterations=1,
        ),
    )


def toolbench_job(limit_micro_usd: int = 0) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        display_name="toolbench",
        spec=jobs_pb2.JobSpec(
            runtime=cpb.RuntimeSpec(
                toolbench=cpb.ToolbenchRuntime(simulated_model="toolbench-sim", simulated_tokens_per_step=200)
            ),
            dataset=jobs_pb2.DatasetSpec(
                toolbench=jobs_pb2.ToolbenchQueries(train_count=4, heldout_count=2, seed=3)
            ),
            policy=jobs_pb2.PolicySource(new_policy=jobs_pb2.NewPolicy()),
            group_size=2,
            batch_size=1,
            iterations=1,
            checkpoint_interval=1,
            evaluation_interval=1,
            seed=3,
            budget=jobs_pb2.BudgetSpec(limit_micro_usd=limit_micro_usd),
        ),
    )


def stubs(suite):
    channels = suite.context.channels
    return (
        collector_pb2_grpc.CollectorServiceStub(channels.channel("collector")),
        jobs_pb2_grpc.JobServiceStub(channels.channel("jobs")),
        identity_pb2_grpc.ApiKeyServiceStub(channels.channel("jobs")),
    )


async def wait_for_end(jobs, job_id: str, metadata, seconds: float = 120.0) -> jobs_pb2.Job:
    ends = {jobs_pb2.Job.STATE_SUCCEEDED, jobs_pb2.Job.STATE_FAILED, jobs_pb2.Job.STATE_CANCELLED}
    async with asyncio.timeout(seconds):
        async for response in jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), metadata=metadata, timeout=seconds
        ):
            if response.job.state in ends:
                return response.job
    raise AssertionError(f"job {job_id} never ended")


def assert_denied_python(error: grpc.aio.AioRpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert ENTRY_POINT in error.details() and "COHORT_PYTHON_RUNTIME_ALLOWLIST" in error.details()
    info = error_info(error)
    assert info.reason == "PYTHON_RUNTIME_NOT_ALLOWED"
    assert (info.metadata["entry_point"], info.metadata["field"]) == (ENTRY_POINT, field)


# --- Python runtimes -----------------------------------------------------------------------------


async def test_a_tenant_key_cannot_make_the_collector_or_a_job_import_python(
    start_suite_for, tmp_path, forget_untrusted
):
    suite = await start_suite_for(settings_for(tmp_path), ["all"])
    collector, jobs, _ = stubs(suite)
    acme = await tenant_key(suite, "acme")

    error = await rpc_error(collector.CollectGroup(collect_request(), metadata=acme, timeout=30).read())
    assert_denied_python(error, "runtime.python.entry_point")
    assert UNTRUSTED not in sys.modules

    error = await rpc_error(
        jobs.CreateJob(jobs_pb2.CreateJobRequest(job=python_job()), metadata=acme, timeout=30)
    )
    assert_denied_python(error, "job.spec.runtime.python.entry_point")
    assert UNTRUSTED not in sys.modules
    listed = await jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=acme, timeout=10)
    assert list(listed.jobs) == []

    # A malformed entry point is still INVALID_ARGUMENT, whoever asks.
    error = await rpc_error(
        collector.CollectGroup(collect_request("not an entry point"), metadata=acme, timeout=30).read()
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    # An admin key may run it: the refusal above was about the key, not the module.
    responses = [r async for r in collector.CollectGroup(collect_request(), timeout=30)]
    assert len(responses) == 2 and all(r.trajectory.success for r in responses)
    assert UNTRUSTED in sys.modules


async def test_an_allow_listed_entry_point_runs_for_any_key(start_suite_for, tmp_path, forget_untrusted):
    settings = settings_for(tmp_path, python_runtime_allowlist=(f"{UNTRUSTED}:*",))
    suite = await start_suite_for(settings, ["all"])
    collector, jobs, _ = stubs(suite)
    acme = await tenant_key(suite, "acme")

    responses = [r async for r in collector.CollectGroup(collect_request(), metadata=acme, timeout=30)]
    assert len(responses) == 2 and all(r.trajectory.tenant_id == "acme" for r in responses)

    created = await jobs.CreateJob(jobs_pb2.CreateJobRequest(job=python_job()), metadata=acme, timeout=30)
    await jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=created.job.job_id), metadata=acme, timeout=10)

    # Only what is listed: another module stays an admin's decision.
    error = await rpc_error(
        collector.CollectGroup(
            collect_request("agents.python_agents:ok_agent"), metadata=acme, timeout=30
        ).read()
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_allow_list_setting_is_parsed_and_checked():
    settings = Settings.from_env({"COHORT_PYTHON_RUNTIME_ALLOWLIST": " a.b:run , c:* "})
    assert settings.python_runtime_allowlist == ("a.b:run", "c:*")
    assert Settings.from_env({}).python_runtime_allowlist == ()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"COHORT_PYTHON_RUNTIME_ALLOWLIST": "a.b:run,os.system"})
    assert caught.value.variable == "COHORT_PYTHON_RUNTIME_ALLOWLIST" and "os.system" in str(caught.value)


async def test_rest_and_json_rpc_refuse_python_runtimes_to_a_tenant_key(
    start_suite_for, tmp_path, forget_untrusted
):
    suite = await start_suite_for(settings_for(tmp_path), ["all"])
    secret = (await tenant_key(suite, "acme"))[0][1]
    headers = {"Authorization": secret}
    async with aiohttp.ClientSession(f"http://{suite.address('gateway')}", headers=headers) as http:
        body = {
            "runtime": {"python": {"entryPoint": ENTRY_POINT}},
            "query": {"queryId": "q-rest", "text": "anything"},
            "groupSize": 2,
        }
        async with http.post("/v1/trajectories:collectGroup", json=body) as response:
            assert response.status == 403, await response.text()
            status = await response.json()
        assert status["code"] == 7 and ENTRY_POINT in status["message"]
        assert UNTRUSTED not in sys.modules

        job = {"spec": {**json_spec(), "runtime": {"python": {"entryPoint": ENTRY_POINT}}}}
        async with http.post("/v1/jobs", json=job) as response:
            assert response.status == 403, await response.text()
            assert ENTRY_POINT in (await response.json())["message"]

        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "training.start_grpo",
            "params": {**job, "display_name": "python"},
        }
        async with http.post("/jsonrpc", data=json.dumps(call)) as response:
            answer = await response.json()
        assert answer["error"]["code"] == -32007, answer
        assert ENTRY_POINT in answer["error"]["message"] or ENTRY_POINT in json.dumps(answer["error"])
        assert UNTRUSTED not in sys.modules


def json_spec() -> dict:
    return {
        "dataset": {"toolbench": {"trainCount": 4, "heldoutCount": 2}},
        "policy": {"newPolicy": {"heads": [{"name": "next", "options": ["a", "b"]}]}},
        "iterations": 1,
    }


# --- API keys: the service credential, the last admin key, recovery -------------------------------


async def test_the_services_keep_working_after_a_persons_admin_key_is_revoked(
    start_suite_for, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="cohort.identity")
    suite = await start_suite_for(settings_for(tmp_path), ["all"])
    _, jobs, keys = stubs(suite)
    admin_secret = (tmp_path / "var" / "admin.key").read_text().strip()
    admin_id = parse_api_key(admin_secret)[0]
    service_secret = (tmp_path / "var" / "service.key").read_text().strip()
    assert service_secret != admin_secret and suite.settings.api_key == service_secret
    assert oct((tmp_path / "var" / "service.key").stat().st_mode & 0o777) == "0o600"
    as_admin = bearer(admin_secret)

    # The only admin key a person holds cannot be revoked...
    error = await rpc_error(
        keys.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(key_id=admin_id), metadata=as_admin, timeout=5)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "last active admin key" in error.details() and error_info(error).reason == "LAST_ADMIN_KEY"
    # ...and nor can the service credential, whoever asks.
    service_id = parse_api_key(service_secret)[0]
    error = await rpc_error(
        keys.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(key_id=service_id), metadata=as_admin, timeout=5)
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "SERVICE_CREDENTIAL"
    listed = await keys.ListApiKeys(identity_pb2.ListApiKeysRequest(), metadata=as_admin, timeout=5)
    assert {k.key_id: k.display_name for k in listed.api_keys}[service_id] == SERVICE_KEY_NAME

    # With a second admin key, the first one may go; every call it makes is then refused.
    second = await keys.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(display_name="second admin", admin=True),
        metadata=as_admin,
        timeout=5,
    )
    await keys.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(key_id=admin_id), metadata=as_admin, timeout=5)
    error = await rpc_error(jobs.ListJobs(jobs_pb2.ListJobsRequest(), metadata=as_admin, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    # A tenant's training job still runs: the jobs service reaches budget, trainer, collector,
    # reward and checkpoint with the service credential, and sets the job's own budget limit.
    acme_key = await keys.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(tenant_id="acme", display_name="acme"),
        metadata=bearer(second.secret),
        timeout=5,
    )
    acme = bearer(acme_key.secret)
    created = await jobs.CreateJob(
        jobs_pb2.CreateJobRequest(job=toolbench_job(limit_micro_usd=50_000_000)), metadata=acme, timeout=30
    )
    final = await wait_for_end(jobs, created.job.job_id, acme)
    assert final.state == jobs_pb2.Job.STATE_SUCCEEDED, final.error
    budget = budget_pb2_grpc.BudgetServiceStub(suite.context.channels.channel("budget"))
    usage = await budget.GetUsage(
        budget_pb2.GetUsageRequest(job_id=created.job.job_id), metadata=acme, timeout=10
    )
    assert usage.job.limit_micro_usd == 50_000_000 and usage.job.spent_micro_usd > 0

    # Every creation and revocation is in the log: key id, tenant, who did it; never a secret.
    lines = [r.getMessage() for r in caplog.records if r.name == "cohort.identity"]
    revoked = [line for line in lines if line.startswith(f"API key {admin_id} ") and "revoked" in line]
    assert revoked and "tenant default" in revoked[0] and f"by key {admin_id}" in revoked[0]
    created_line = [line for line in lines if line.startswith(f"API key {second.api_key.key_id} created")]
    assert created_line and "tenant default" in created_line[0] and f"by key {admin_id}" in created_line[0]
    secrets = [admin_secret, service_secret, second.secret, acme_key.secret]
    assert not any(secret in line for line in lines for secret in secrets)


async def test_the_cli_mints_a_working_admin_key_with_the_services_down(start_suite_for, tmp_path):
    settings = settings_for(tmp_path)
    suite = await start_suite_for(settings, ["jobs"])
    old_secret = (tmp_path / "var" / "admin.key").read_text().strip()
    await suite.stop(0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
    env["COHORT_DATA_DIR"] = str(tmp_path / "var")
    result = await asyncio.to_thread(
        subprocess.run,
        [*COHORT, "keys", "recover-admin", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    minted = json.loads(result.stdout)
    assert minted["admin"] and minted["tenant_id"] == "default" and minted["secret"] != old_secret
    # On the embedded default it becomes the CLI's key too.
    assert (tmp_path / "var" / "admin.key").read_text().strip() == minted["secret"]
    assert f"API key {minted['key_id']} created for tenant default (admin) by cohort CLI" in result.stderr

    suite = await start_suite_for(settings, ["jobs"])
    keys = identity_pb2_grpc.ApiKeyServiceStub(suite.context.channels.channel("jobs"))
    listed = await keys.ListApiKeys(
        identity_pb2.ListApiKeysRequest(), metadata=bearer(minted["secret"]), timeout=5
    )
    admins = {k.key_id for k in listed.api_keys if k.admin}
    assert minted["key_id"] in admins and parse_api_key(old_secret)[0] in admins
    # The new key is an admin in every sense: it may retire the old one now.
    await keys.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(key_id=parse_api_key(old_secret)[0]),
        metadata=bearer(minted["secret"]),
        timeout=5,
    )
