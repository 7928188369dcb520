"""The checkpoint service over real gRPC, on SQLite and on PostgreSQL: the save protocol, verified loads
with fallback, retention, idempotency, tenants, bad input, and crashes at every stage of a save."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
from suite_calls import rpc_error, tenant_key

from cohort.api.checkpoint.v1 import checkpoint_pb2 as pb
from cohort.api.checkpoint.v1 import checkpoint_pb2_grpc
from cohort.platform.context import Identity, current_identity
from cohort.platform.rpc.client import bad_request, error_info
from cohort.services.checkpoint.blobstore import MANIFEST_NAME, STAGING_PREFIX, LocalBlobStore, SaveStage
from cohort.services.checkpoint.service import CheckpointService
from cohort.services.checkpoint.state import TrainingState, decode_training_state, encode_training_state

MiB = 1024 * 1024


@pytest.fixture
def start(start_suite_for, database_settings):
    return lambda **overrides: start_suite_for(
        database_settings.with_overrides(**overrides), ["checkpoint", "jobs"]
    )


@pytest.fixture
async def suite(start):
    return await start()


def stub_of(suite) -> checkpoint_pb2_grpc.CheckpointServiceStub:
    """A stub acting as the suite's admin key (tenant `default`)."""
    return checkpoint_pb2_grpc.CheckpointServiceStub(suite.context.channels.channel("checkpoint"))


def checkpoint_dir(suite) -> Path:
    return suite.settings.effective_checkpoint_dir


def on_disk(suite) -> set[str]:
    root = checkpoint_dir(suite)
    return {p.name for p in root.iterdir()} if root.exists() else set()


async def eventually_on_disk(suite, expected: set[str]) -> set[str]:
    """What is on disk once retention's background deletes are done (or after 10 s)."""
    for _ in range(500):
        if on_disk(suite) == expected:
            break
        await asyncio.sleep(0.02)
    return on_disk(suite)


def files(i: int, size: int = 2048) -> list[pb.CheckpointFile]:
    rng = np.random.default_rng(i)
    return [
        pb.CheckpointFile(name="policy.npz", content=rng.bytes(size)),
        pb.CheckpointFile(name="optimizer.npz", content=rng.bytes(2 * size)),
        pb.CheckpointFile(name="state.json", content=json.dumps({"iteration": i, "cursor": i * 64}).encode()),
    ]


def save_request(i: int, job_id: str = "job-1", **fields) -> pb.SaveCheckpointRequest:
    request = pb.SaveCheckpointRequest(
        job_id=job_id,
        iteration=i,
        policy_id="pol-1",
        policy_version=i + 1,
        metrics={"reward_mean": i / 10, "loss": 1.0 / (i + 1)},
        files=files(i),
        cumulative_cost_micro_usd=1000 * i,
    )
    for name, value in fields.items():
        if name == "retention":
            request.retention.CopyFrom(value)
        elif name == "files":
            del request.files[:]
            request.files.extend(value)
        elif name == "metrics":
            request.metrics.clear()
            request.metrics.update(value)
        else:
            setattr(request, name, value)
    return request


async def save(stub, i: int, **fields) -> pb.SaveCheckpointResponse:
    return await stub.SaveCheckpoint(save_request(i, **fields), timeout=10)


async def latest(stub, job_id: str = "job-1", **kwargs) -> pb.GetLatestCheckpointResponse:
    return await stub.GetLatestCheckpoint(
        pb.GetLatestCheckpointRequest(job_id=job_id, include_files=True), timeout=10, **kwargs
    )


async def listed(stub, job_id: str = "job-1", **kwargs) -> list[str]:
    response = await stub.ListCheckpoints(
        pb.ListCheckpointsRequest(job_id=job_id, page_size=1000), timeout=10, **kwargs
    )
    return [c.checkpoint_id for c in response.checkpoints]


def content_of(response) -> dict[str, bytes]:
    return {f.name: f.content for f in response.files}


# --- Save and load ----------------------------------------------------------------------------------


async def test_save_stores_everything_and_loads_it_back_verified(suite):
    stub = stub_of(suite)
    request = save_request(3)
    saved = (await stub.SaveCheckpoint(request, timeout=10)).checkpoint
    assert saved.checkpoint_id and saved.tenant_id == "default" and saved.job_id == "job-1"
    assert (saved.iteration, saved.policy_id, saved.policy_version) == (3, "pol-1", 4)
    assert dict(saved.metrics) == pytest.approx({"reward_mean": 0.3, "loss": 0.25})
    assert saved.cumulative_cost_micro_usd == 3000
    assert saved.create_time.seconds > 0
    assert {f.name: (f.size_bytes, f.sha256) for f in saved.files} == {
        f.name: (len(f.content), hashlib.sha256(f.content).hexdigest()) for f in request.files
    }
    assert saved.size_bytes == sum(len(f.content) for f in request.files)

    # On disk: the files and the manifest, whose hash the checkpoint carries; nothing left in staging.
    directory = checkpoint_dir(suite) / saved.checkpoint_id
    manifest = (directory / MANIFEST_NAME).read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == saved.manifest_sha256
    assert {entry["name"]: entry["sha256"] for entry in json.loads(manifest)["files"]} == {
        f.name: f.sha256 for f in saved.files
    }
    assert on_disk(suite) == {saved.checkpoint_id}

    got = await stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=saved.checkpoint_id), timeout=5)
    assert got.checkpoint == saved and list(got.files) == []
    got = await stub.GetCheckpoint(
        pb.GetCheckpointRequest(checkpoint_id=saved.checkpoint_id, include_files=True), timeout=5
    )
    assert content_of(got) == {f.name: f.content for f in request.files}

    newest = await latest(stub)
    assert newest.checkpoint == saved and list(newest.skipped) == []
    assert content_of(newest) == content_of(got)


async def test_full_training_state_survives_a_round_trip(suite):
    rng = np.random.default_rng(7)
    generator = np.random.default_rng(42)
    generator.random(5)
    state = TrainingState(
        policy_parameters={
            "tool_choice/W": rng.standard_normal((64, 32)),
            "router/W": rng.standard_normal(16),
        },
        optimizer_moments={
            "m": {"tool_choice/W": rng.standard_normal((64, 32)), "router/W": rng.standard_normal(16)},
            "v": {"tool_choice/W": rng.random((64, 32)), "router/W": rng.random(16)},
        },
        optimizer_step=123,
        rng_states={"sampler": generator.bit_generator.state},
        data_cursor={"epoch": 2, "offset": 480, "order_seed": 99},
        reward_statistics={"mean": 0.41, "std": 0.2, "count": 960},
        reference_policy_sha256="ab" * 32,
    )
    stub = stub_of(suite)
    await save(stub, 12, files=encode_training_state(state))
    restored = decode_training_state((await latest(stub)).files)

    for name, value in state.policy_parameters.items():
        np.testing.assert_array_equal(restored.policy_parameters[name], value)
    for moment in ("m", "v"):
        for name, value in state.optimizer_moments[moment].items():
            np.testing.assert_array_equal(restored.optimizer_moments[moment][name], value)
    assert restored.optimizer_step == 123
    assert restored.data_cursor == state.data_cursor
    assert restored.reward_statistics == state.reward_statistics
    assert restored.reference_policy_sha256 == state.reference_policy_sha256
    resumed = np.random.default_rng()
    resumed.bit_generator.state = restored.rng_states["sampler"]
    assert resumed.random() == generator.random()  # the RNG continues exactly where it was


async def test_list_is_newest_first_and_paged(suite):
    stub = stub_of(suite)
    retention = pb.RetentionPolicy(keep_best=100)
    ids = [(await save(stub, i, retention=retention)).checkpoint.checkpoint_id for i in range(5)]
    await save(stub, 0, job_id="job-2")
    seen, token = [], ""
    while True:
        page = await stub.ListCheckpoints(
            pb.ListCheckpointsRequest(job_id="job-1", page_size=2, page_token=token), timeout=5
        )
        assert len(page.checkpoints) <= 2
        seen.extend(c.checkpoint_id for c in page.checkpoints)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    other_job = await rpc_error(
        stub.ListCheckpoints(
            pb.ListCheckpointsRequest(job_id="job-2", page_token=page.next_page_token or "x")
        )
    )
    assert other_job.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = await stub.ListCheckpoints(pb.ListCheckpointsRequest(job_id="job-1", page_size=2), timeout=5)
    replayed = await rpc_error(
        stub.ListCheckpoints(pb.ListCheckpointsRequest(job_id="job-2", page_token=first.next_page_token))
    )
    assert bad_request(replayed).field_violations[0].field == "page_token"


# --- Retention --------------------------------------------------------------------------------------


async def test_retention_keeps_the_latest_and_the_best_k_and_deletes_the_rest_after_commit(suite):
    stub = stub_of(suite)
    rewards = [0.5, 0.9, 0.1, 0.7, 0.2, 0.3]
    retention = pb.RetentionPolicy(keep_best=2, metric="reward", direction=pb.METRIC_DIRECTION_MAXIMIZE)
    ids, deleted = [], []
    for i, reward in enumerate(rewards):
        response = await save(stub, i, metrics={"reward": reward}, retention=retention)
        ids.append(response.checkpoint.checkpoint_id)
        deleted.extend(response.deleted_checkpoint_ids)
        assert response.checkpoint.checkpoint_id not in response.deleted_checkpoint_ids
    survivors = {ids[1], ids[3], ids[5]}  # best two (0.9, 0.7) and the latest
    assert set(await listed(stub)) == survivors
    assert set(deleted) == set(ids) - survivors
    assert await eventually_on_disk(suite, survivors) == survivors
    for checkpoint_id in deleted:
        missing = await rpc_error(stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=checkpoint_id)))
        assert missing.code() == grpc.StatusCode.NOT_FOUND

    # Minimizing another metric, and the default (reward_mean, 5 best) when no policy is given.
    minimize = pb.RetentionPolicy(keep_best=1, metric="loss", direction=pb.METRIC_DIRECTION_MINIMIZE)
    low = (await save(stub, 10, job_id="job-3", metrics={"loss": 0.1}, retention=minimize)).checkpoint
    await save(stub, 11, job_id="job-3", metrics={"loss": 0.5}, retention=minimize)
    last = await save(stub, 12, job_id="job-3", metrics={"loss": 0.9}, retention=minimize)
    assert set(await listed(stub, "job-3")) == {low.checkpoint_id, last.checkpoint.checkpoint_id}
    job_4 = [(await save(stub, i, job_id="job-4", metrics={"reward_mean": 1 - i / 10})) for i in range(7)]
    kept = {r.checkpoint.checkpoint_id for r in job_4[:5]} | {job_4[-1].checkpoint.checkpoint_id}
    assert set(await listed(stub, "job-4")) == kept  # the latest and the 5 best (the earliest five)


# --- Idempotency, tenants, not found ---------------------------------------------------------------


async def test_save_and_delete_are_idempotent_by_request_id(suite):
    stub = stub_of(suite)
    request = save_request(1, request_id="save-1")
    first = await stub.SaveCheckpoint(request, timeout=10)
    again = await stub.SaveCheckpoint(request, timeout=10)
    assert again == first
    assert await listed(stub) == [first.checkpoint.checkpoint_id]
    assert on_disk(suite) == {first.checkpoint.checkpoint_id}
    # Two first calls at once with one id: one checkpoint, both get its answer, no stray files.
    twins = await asyncio.gather(
        *(stub.SaveCheckpoint(save_request(5, request_id="save-twin"), timeout=10) for _ in range(2))
    )
    assert twins[0] == twins[1]
    assert await listed(stub) == [twins[0].checkpoint.checkpoint_id, first.checkpoint.checkpoint_id]
    assert on_disk(suite) == set(await listed(stub))
    await stub.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=twins[0].checkpoint.checkpoint_id))

    reused = await rpc_error(stub.SaveCheckpoint(save_request(2, request_id="save-1")))
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(reused).field_violations[0].field == "request_id"

    delete = pb.DeleteCheckpointRequest(request_id="del-1", checkpoint_id=first.checkpoint.checkpoint_id)
    deleted = await stub.DeleteCheckpoint(delete, timeout=5)
    assert deleted.checkpoint_id == first.checkpoint.checkpoint_id
    assert await stub.DeleteCheckpoint(delete, timeout=5) == deleted  # a repeat answers the same
    assert await listed(stub) == [] and on_disk(suite) == set()
    gone = await rpc_error(
        stub.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=first.checkpoint.checkpoint_id))
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_ids_and_other_tenants_checkpoints_are_not_found(suite):
    stub = stub_of(suite)
    for call in (
        stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id="nope")),
        stub.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id="nope")),
        stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(job_id="no-such-job")),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND

    acme = await tenant_key(suite, "acme")
    globex = await tenant_key(suite, "globex")
    mine = (await stub.SaveCheckpoint(save_request(1), metadata=acme, timeout=10)).checkpoint
    assert mine.tenant_id == "acme"
    for call in (
        stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=mine.checkpoint_id), metadata=globex),
        stub.DeleteCheckpoint(pb.DeleteCheckpointRequest(checkpoint_id=mine.checkpoint_id), metadata=globex),
        stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(job_id="job-1"), metadata=globex),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    assert await listed(stub, metadata=globex) == []
    assert (await latest(stub, metadata=acme)).checkpoint == mine


BAD_SAVES = {
    "job_id": dict(job_id=""),
    "iteration": dict(iteration=-1),
    "policy_version": dict(policy_version=-2),
    "cumulative_cost_micro_usd": dict(cumulative_cost_micro_usd=-5),
    "retention.direction": dict(retention=pb.RetentionPolicy(direction=7)),
    "retention.keep_best": dict(retention=pb.RetentionPolicy(keep_best=-1)),
    "retention.metric": dict(retention=pb.RetentionPolicy(metric="rewrd_mean")),
    "metrics[loss]": dict(metrics={"loss": float("nan")}),
    "files": dict(files=[]),
    "files[0].name": dict(files=[pb.CheckpointFile(name="../escape", content=b"x")]),
    "files[1].name": dict(
        files=[pb.CheckpointFile(name="a.bin", content=b"x"), pb.CheckpointFile(name="MANIFEST.json")]
    ),
}


async def test_bad_input_is_invalid_argument_naming_the_field_and_stores_nothing(start):
    suite = await start(max_message_bytes=1 * MiB)
    stub = stub_of(suite)
    cases = dict(BAD_SAVES)
    cases["files "] = dict(files=[pb.CheckpointFile(name="policy.npz", content=b"\0" * (MiB - 100 * 1024))])
    for field, fields in cases.items():
        error = await rpc_error(stub.SaveCheckpoint(save_request(1, **fields), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert bad_request(error).field_violations[0].field == field.strip(), error.details()
    duplicate = [pb.CheckpointFile(name="a.bin"), pb.CheckpointFile(name="A.BIN")]
    error = await rpc_error(stub.SaveCheckpoint(save_request(1, files=duplicate)))
    assert bad_request(error).field_violations[0].field == "files[1].name"
    for call, field in (
        (stub.GetCheckpoint(pb.GetCheckpointRequest()), "checkpoint_id"),
        (stub.DeleteCheckpoint(pb.DeleteCheckpointRequest()), "checkpoint_id"),
        (stub.ListCheckpoints(pb.ListCheckpointsRequest()), "job_id"),
        (stub.ListCheckpoints(pb.ListCheckpointsRequest(job_id="j", page_size=5000)), "page_size"),
        (stub.ListCheckpoints(pb.ListCheckpointsRequest(job_id="j", page_token="garbage")), "page_token"),
        (stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(job_id="has space")), "job_id"),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request(error).field_violations[0].field == field
    assert await listed(stub) == [] and on_disk(suite) == set()


# --- Corruption -------------------------------------------------------------------------------------


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGES = {
    "flipped-byte": (lambda d: flip_byte(d / "policy.npz"), "policy.npz: sha256 mismatch"),
    "truncated": (
        lambda d: (d / "optimizer.npz").write_bytes((d / "optimizer.npz").read_bytes()[:-10]),
        "optimizer.npz: truncated",
    ),
    "missing": (lambda d: (d / "state.json").unlink(), "missing file state.json"),
    "manifest": (lambda d: flip_byte(d / MANIFEST_NAME, 5), "MANIFEST.json: sha256 mismatch"),
}


async def test_a_damaged_newest_checkpoint_is_detected_and_the_previous_one_used(suite, caplog):
    stub = stub_of(suite)
    for job_id, (damage, reason) in DAMAGES.items():
        older = await stub.SaveCheckpoint(save_request(1, job_id=job_id), timeout=10)
        newer = (await save(stub, 2, job_id=job_id)).checkpoint
        damage(checkpoint_dir(suite) / newer.checkpoint_id)

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cohort.services.checkpoint"):
            response = await latest(stub, job_id)
        assert response.checkpoint == older.checkpoint, job_id
        assert content_of(response) == {f.name: f.content for f in save_request(1).files}
        assert [s.checkpoint_id for s in response.skipped] == [newer.checkpoint_id]
        assert reason in response.skipped[0].reason, job_id
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(newer.checkpoint_id in message and reason in message for message in warnings)

        # Asking for the damaged one by id is DATA_LOSS with the reason; its metadata is still readable.
        error = await rpc_error(
            stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=newer.checkpoint_id, include_files=True))
        )
        assert error.code() == grpc.StatusCode.DATA_LOSS and reason in error.details()
        assert error_info(error).reason == "CHECKPOINT_CORRUPT"
        meta = await stub.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_id=newer.checkpoint_id), timeout=5)
        assert meta.checkpoint == newer

    # With every checkpoint of a job damaged there is nothing to resume from: DATA_LOSS, not a guess.
    for i in range(2):
        saved = (await save(stub, i, job_id="all-damaged")).checkpoint
        flip_byte(checkpoint_dir(suite) / saved.checkpoint_id / "policy.npz")
    error = await rpc_error(stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(job_id="all-damaged")))
    assert error.code() == grpc.StatusCode.DATA_LOSS and "every checkpoint" in error.details()


# --- Crashes ----------------------------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Stands for the process dying: a BaseException, so no `except Exception` cleanup runs."""


def leftovers(root: Path, committed: set[str]) -> set[str]:
    return {p.name for p in root.iterdir()} - committed


async def test_a_crash_at_any_stage_of_a_save_resumes_from_the_last_committed_checkpoint(start):
    suite = await start()
    committed = (await stub_of(suite).SaveCheckpoint(save_request(1), timeout=10)).checkpoint
    history = [committed.checkpoint_id]  # newest first
    root = checkpoint_dir(suite)
    for stage in SaveStage:

        def crash_at(reached: SaveStage, stage=stage) -> None:
            if reached is stage:
                raise SimulatedCrash(stage)

        crashing = CheckpointService(
            suite.context.database, LocalBlobStore(root), max_content_bytes=MiB, on_stage=crash_at
        )
        token = current_identity.set(Identity(tenant_id="default", key_id="test"))
        try:
            with pytest.raises(SimulatedCrash):
                await crashing.save(save_request(2))
        finally:
            current_identity.reset(token)
        assert leftovers(root, set(history)), stage  # the crash left something behind
        await suite.stop(0)

        # A fresh service on the same directory and database: orphans cleaned, the last commit intact.
        suite = await start()
        stub = stub_of(suite)
        resumed = await latest(stub)
        assert resumed.checkpoint == committed and list(resumed.skipped) == [], stage
        assert content_of(resumed) == {f.name: f.content for f in save_request(committed.iteration).files}
        assert await listed(stub) == history, stage
        assert on_disk(suite) == set(history), stage  # orphans cleaned at start
        committed = (await save(stub, committed.iteration + 1)).checkpoint  # and saving goes on
        history.insert(0, committed.checkpoint_id)
        assert await listed(stub) == history


KILLED_SAVE = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from cohort.api.checkpoint.v1 import checkpoint_pb2 as pb
    from cohort.platform.config import Settings
    from cohort.platform.context import Identity, current_identity
    from cohort.services.checkpoint.blobstore import LocalBlobStore, SaveStage
    from cohort.services.checkpoint.service import CheckpointService
    from cohort.platform.storage import open_database

    data_dir, database_url, schema, stage, request = sys.argv[1:6]

    def die_at(reached):
        if reached == stage:
            os._exit(9)

    async def main():
        settings = Settings(data_dir=Path(data_dir), database_url=database_url)
        settings = settings.with_overrides(database_schema=schema or None)
        database = await open_database(settings, migrate=False)
        blobs = LocalBlobStore(settings.effective_checkpoint_dir)
        service = CheckpointService(database, blobs, max_content_bytes=2**24, on_stage=die_at)
        current_identity.set(Identity(tenant_id="default", key_id="test"))
        await service.save(pb.SaveCheckpointRequest.FromString(bytes.fromhex(request)))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("stage", [SaveStage.BEFORE_COMMIT])
async def test_a_killed_saving_process_leaves_the_last_committed_checkpoint_intact(start, stage):
    """A real process death (os._exit) after the files are in place, inside the uncommitted transaction;
    the in-process test above covers every stage."""
    suite = await start()
    settings = suite.settings
    committed = await stub_of(suite).SaveCheckpoint(save_request(1), timeout=10)
    await suite.stop(0)

    killed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_SAVE,
        str(settings.data_dir),
        settings.database_url,
        settings.database_schema or "",
        stage.value,
        save_request(2).SerializeToString().hex(),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(killed.communicate(), 60)
    assert killed.returncode == 9, stderr.decode()
    assert leftovers(settings.effective_checkpoint_dir, {committed.checkpoint.checkpoint_id})

    restarted = await start()
    stub = stub_of(restarted)
    resumed = await latest(stub)
    assert resumed.checkpoint == committed.checkpoint and list(resumed.skipped) == []
    assert content_of(resumed) == {f.name: f.content for f in save_request(1).files}
    assert on_disk(restarted) == {committed.checkpoint.checkpoint_id}
    assert not any(name.startswith(STAGING_PREFIX) for name in on_disk(restarted))
