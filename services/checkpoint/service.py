"""The checkpoint service's domain: the save protocol, verified loads with fallback, retention, recovery.

Save, in order (a crash at any point leaves either the previous state or the new checkpoint, never a
half-written one that a load would accept):

1. validate the request (`InvalidArgument` naming the field; nothing is written);
2. in a worker thread, publish the files through the blob store while they are hashed in parallel:
   files, then the manifest (sha256 per file), fsynced, renamed into place, directory fsynced;
3. in ONE database transaction: the checkpoint row, the rows retention removes (under a per-job lock),
   and the idempotency record. That commit is the commit point;
4. only then, in the background, delete the files of the checkpoints retention removed.

Files published but never committed (a crash between 2 and 3), files of removed checkpoints whose
deletion a crash interrupted (after 3), and staging leftovers are removed when
the service starts (`recover`), before it serves anything. A load verifies the on-disk manifest
against the hash in the row and every file against the manifest in the row; `latest` falls back to
the newest checkpoint that verifies and names the ones it skipped.

Assumes one checkpoint-service process per checkpoint directory (the embedded default). Replicas
need a shared object store behind `BlobStore`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import grpc

from cohort.api.checkpoint.v1 import checkpoint_pb2 as pb
from cohort.platform.context import current_tenant
from cohort.platform.errors import CohortError, InvalidArgument, NotFound
from cohort.platform.ids import uuid7
from cohort.platform.paging import DEFAULT_PAGE_SIZE, check_page_size, decode_page_token, encode_page_token
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database, Session
from cohort.platform.storage.schema import utcnow
from cohort.platform.timestamps import to_timestamp
from cohort.services.checkpoint.blobstore import MANIFEST_NAME, BlobStore, SaveStage, StageHook
from cohort.services.checkpoint.retention import (
    DEFAULT_KEEP_BEST,
    DEFAULT_METRIC,
    MAX_KEEP_BEST,
    Direction,
    RetainedCheckpoint,
    RetentionPolicy,
    checkpoints_to_delete,
)
from cohort.services.checkpoint.store import CheckpointRecord, CheckpointStore

log = logging.getLogger(__name__)

SAVE_SCOPE = "cohort.api.checkpoint.v1.CheckpointService.SaveCheckpoint"
DELETE_SCOPE = "cohort.api.checkpoint.v1.CheckpointService.DeleteCheckpoint"
MANIFEST_FORMAT = "cohort.checkpoint.v1"

ID_LIMIT = 128
MAX_FILES = 256
FILE_NAME_LIMIT = 128
MAX_METRICS = 256
METRIC_NAME_LIMIT = 128
RESPONSE_MARGIN_BYTES = 128 * 1024
"""Room left for a checkpoint's metadata when its files are returned in one message of the size limit."""
LATEST_SCAN_BATCH = 16

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*")
_FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DIRECTIONS = {
    pb.METRIC_DIRECTION_UNSPECIFIED: Direction.MAXIMIZE,
    pb.METRIC_DIRECTION_MAXIMIZE: Direction.MAXIMIZE,
    pb.METRIC_DIRECTION_MINIMIZE: Direction.MINIMIZE,
}


class CheckpointDataLoss(CohortError):
    """A checkpoint's files are missing or do not match their manifest (gRPC `DATA_LOSS`)."""

    status_code = grpc.StatusCode.DATA_LOSS
    default_reason = "CHECKPOINT_CORRUPT"


class CorruptCheckpoint(Exception):
    """Verification failed; `reason` says what (a missing file, a hash mismatch, a truncated file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Validation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveSpec:
    """A validated `SaveCheckpointRequest`."""

    job_id: str
    iteration: int
    policy_id: str
    policy_version: int
    metrics: dict[str, float]
    files: list[tuple[str, bytes]]
    retention: RetentionPolicy
    cumulative_cost_micro_usd: int


def _check_id(value: str, field: str, *, required: bool) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) > ID_LIMIT or not _ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field, f"must be 1 to {ID_LIMIT} letters, digits or ._:@/+=- starting with a letter or digit"
        )
    return value


def check_checkpoint_id(value: str, field: str = "checkpoint_id") -> str:
    return _check_id(value, field, required=True)


def retention_from_proto(message: pb.RetentionPolicy, metrics: dict[str, float]) -> RetentionPolicy:
    if message.direction not in _DIRECTIONS:
        raise InvalidArgument("retention.direction", f"unknown metric direction {message.direction}")
    if not 0 <= message.keep_best <= MAX_KEEP_BEST:
        raise InvalidArgument(
            "retention.keep_best", f"must be between 0 (default {DEFAULT_KEEP_BEST}) and {MAX_KEEP_BEST}"
        )
    if len(message.metric) > METRIC_NAME_LIMIT:
        raise InvalidArgument("retention.metric", f"is longer than {METRIC_NAME_LIMIT} characters")
    if message.metric and metrics and message.metric not in metrics:
        # An explicit metric this checkpoint does not report is almost surely a misspelling; ranking
        # by it would silently treat every checkpoint as unranked.
        raise InvalidArgument(
            "retention.metric", f"{message.metric!r} is not among this checkpoint's metrics"
        )
    return RetentionPolicy(
        keep_best=message.keep_best or DEFAULT_KEEP_BEST,
        metric=message.metric or DEFAULT_METRIC,
        direction=_DIRECTIONS[message.direction],
    )


def parse_save_request(request: pb.SaveCheckpointRequest, max_content_bytes: int) -> SaveSpec:
    """Validates a save request; `InvalidArgument` names the first bad field."""
    job_id = _check_id(request.job_id, "job_id", required=True)
    if request.iteration < 0:
        raise InvalidArgument("iteration", "must not be negative")
    policy_id = _check_id(request.policy_id, "policy_id", required=False)
    if request.policy_version < 0:
        raise InvalidArgument("policy_version", "must not be negative")
    if request.cumulative_cost_micro_usd < 0:
        raise InvalidArgument("cumulative_cost_micro_usd", "must not be negative")
    if len(request.metrics) > MAX_METRICS:
        raise InvalidArgument("metrics", f"at most {MAX_METRICS} metrics")
    metrics: dict[str, float] = {}
    for name, value in sorted(request.metrics.items()):
        if not name.strip() or len(name) > METRIC_NAME_LIMIT:
            raise InvalidArgument("metrics", f"metric names must be 1 to {METRIC_NAME_LIMIT} characters")
        if not math.isfinite(value):
            raise InvalidArgument(f"metrics[{name}]", "must be a finite number")
        metrics[name] = value
    if not request.files:
        raise InvalidArgument("files", "at least one file is required")
    if len(request.files) > MAX_FILES:
        raise InvalidArgument("files", f"at most {MAX_FILES} files")
    seen: set[str] = set()
    files: list[tuple[str, bytes]] = []
    total = 0
    for i, file in enumerate(request.files):
        name = file.name
        if len(name) > FILE_NAME_LIMIT or not _FILE_NAME_PATTERN.fullmatch(name):
            raise InvalidArgument(
                f"files[{i}].name",
                f"must be 1 to {FILE_NAME_LIMIT} letters, digits or ._- starting with a letter or digit",
            )
        folded = name.casefold()
        if folded == MANIFEST_NAME.casefold():
            raise InvalidArgument(f"files[{i}].name", f"{MANIFEST_NAME} is reserved for the manifest")
        if folded in seen:
            raise InvalidArgument(f"files[{i}].name", f"duplicate file name {name!r}")
        seen.add(folded)
        total += len(file.content)
        files.append((name, file.content))
    if total > max_content_bytes:
        raise InvalidArgument(
            "files", f"{total} bytes in all; a checkpoint holds at most {max_content_bytes} bytes"
        )
    retention = retention_from_proto(request.retention, metrics)
    return SaveSpec(
        job_id=job_id,
        iteration=request.iteration,
        policy_id=policy_id,
        policy_version=request.policy_version,
        metrics=metrics,
        files=files,
        retention=retention,
        cumulative_cost_micro_usd=request.cumulative_cost_micro_usd,
    )


# --- Manifest and verification (worker thread) ------------------------------------------------------


_HASH_POOL = ThreadPoolExecutor(
    max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="checkpoint-sha256"
)
"""sha256 of a checkpoint's files, in parallel (hashlib releases the GIL) and overlapping the writes."""


def _sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def build_manifest(tenant_id: str, checkpoint_id: str, spec: SaveSpec, digests: Sequence[str]) -> bytes:
    """The manifest of a checkpoint (deterministic JSON): what it is and every file's size and sha256."""
    document = {
        "format": MANIFEST_FORMAT,
        "tenant_id": tenant_id,
        "checkpoint_id": checkpoint_id,
        "job_id": spec.job_id,
        "iteration": spec.iteration,
        "policy_id": spec.policy_id,
        "policy_version": spec.policy_version,
        "metrics": spec.metrics,
        "cumulative_cost_micro_usd": spec.cumulative_cost_micro_usd,
        "files": [
            {"name": name, "size_bytes": len(content), "sha256": digest}
            for (name, content), digest in zip(spec.files, digests, strict=True)
        ],
    }
    return json.dumps(document, sort_keys=True, indent=1, allow_nan=False).encode()


def verify_files(blobs: BlobStore, record: CheckpointRecord) -> list[tuple[str, bytes]]:
    """Every file of `record`, checked against the manifest in its row; `CorruptCheckpoint` says why not."""
    key = record.blob_key
    try:
        on_disk = blobs.read(key, MANIFEST_NAME)
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"missing file {MANIFEST_NAME}") from exc
    if _sha256_hex(on_disk) != record.manifest_sha256:
        raise CorruptCheckpoint(f"{MANIFEST_NAME}: sha256 mismatch")
    files: list[tuple[str, bytes, Future[str]]] = []
    for entry in record.files:
        try:
            content = blobs.read(key, entry.name)
        except FileNotFoundError as exc:
            raise CorruptCheckpoint(f"missing file {entry.name}") from exc
        if len(content) < entry.size_bytes:
            raise CorruptCheckpoint(f"{entry.name}: truncated ({len(content)} of {entry.size_bytes} bytes)")
        if len(content) != entry.size_bytes:
            raise CorruptCheckpoint(
                f"{entry.name}: {len(content)} bytes, the manifest says {entry.size_bytes}"
            )
        files.append((entry.name, content, _HASH_POOL.submit(_sha256_hex, content)))
    for (name, _, digest), entry in zip(files, record.files, strict=True):
        if digest.result() != entry.sha256:
            raise CorruptCheckpoint(f"{name}: sha256 mismatch")
    return [(name, content) for name, content, _ in files]


# --- Proto ------------------------------------------------------------------------------------------


def checkpoint_to_proto(record: CheckpointRecord) -> pb.Checkpoint:
    return pb.Checkpoint(
        checkpoint_id=record.checkpoint_id,
        tenant_id=record.tenant_id,
        job_id=record.job_id,
        iteration=record.iteration,
        policy_id=record.policy_id,
        policy_version=record.policy_version,
        metrics=record.metrics,
        files=[
            pb.CheckpointFileInfo(name=f.name, size_bytes=f.size_bytes, sha256=f.sha256) for f in record.files
        ],
        size_bytes=record.size_bytes,
        manifest_sha256=record.manifest_sha256,
        create_time=to_timestamp(record.create_time),
        cumulative_cost_micro_usd=record.cumulative_cost_micro_usd,
    )


def _files_to_proto(files: Sequence[tuple[str, bytes]]) -> list[pb.CheckpointFile]:
    return [pb.CheckpointFile(name=name, content=content) for name, content in files]


# --- The service ------------------------------------------------------------------------------------


class CheckpointService:
    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        *,
        max_content_bytes: int,
        on_stage: StageHook | None = None,
    ) -> None:
        """`max_content_bytes`: the most file bytes one checkpoint may hold. `on_stage`: called at each
        `SaveStage` of a save (tests inject crashes there)."""
        self._database = database
        self._blobs = blobs
        self._store = CheckpointStore(database)
        self._max_content_bytes = max_content_bytes
        self._on_stage = on_stage
        self._recovery: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    @classmethod
    def for_message_limit(cls, database: Database, blobs: BlobStore, max_message_bytes: int, **kwargs):
        """A service whose checkpoints still fit one gRPC message of `max_message_bytes` when read back."""
        return cls(
            database, blobs, max_content_bytes=max(max_message_bytes - RESPONSE_MARGIN_BYTES, 1), **kwargs
        )

    # -- start-up ------------------------------------------------------------------------------------

    def start_recovery(self) -> None:
        """Starts `recover` in the background (the first call of any RPC waits for it)."""
        if self._recovery is None:
            self._recovery = asyncio.get_running_loop().create_task(self.recover())

    async def ready(self) -> None:
        self.start_recovery()
        assert self._recovery is not None
        try:
            await asyncio.shield(self._recovery)
        except Exception:
            self._recovery = None  # try again on the next call (the database may be back)
            raise

    async def recover(self) -> list[str]:
        """Removes staging leftovers and published files with no committed row; returns the removed keys."""
        incomplete = await asyncio.to_thread(self._blobs.remove_incomplete)
        published = await asyncio.to_thread(self._blobs.published_keys)
        committed = await self._store.committed_blob_keys(published)
        orphans = [key for key in published if key not in committed]
        for key in orphans:
            await asyncio.to_thread(self._blobs.delete, key)
        if incomplete:
            log.warning("checkpoint start-up: removed %d unfinished save(s): %s", len(incomplete), incomplete)
        if orphans:
            log.warning(
                "checkpoint start-up: removed %d uncommitted checkpoint(s): %s", len(orphans), orphans
            )
        return sorted([*incomplete, *orphans])

    # -- save ----------------------------------------------------------------------------------------

    async def save(self, request: pb.SaveCheckpointRequest) -> pb.SaveCheckpointResponse:
        await self.ready()
        tenant_id = current_tenant()
        spec = parse_save_request(request, self._max_content_bytes)
        previous = await idempotency.find_answer(
            self._database, SAVE_SCOPE, request, pb.SaveCheckpointResponse
        )
        if previous is not None:
            return previous

        checkpoint_id = uuid7()
        key = checkpoint_id
        manifest = await asyncio.to_thread(self._publish, tenant_id, checkpoint_id, spec)
        removed: list[CheckpointRecord] = []

        async def commit(session: Session) -> pb.SaveCheckpointResponse:
            response, victims = await self._add(session, tenant_id, checkpoint_id, key, spec, manifest)
            removed.extend(victims)
            return response

        try:
            response = await idempotency.run_once(
                self._database, SAVE_SCOPE, request, pb.SaveCheckpointResponse, commit
            )
        except Exception:
            await self._discard_if_uncommitted(key)
            raise
        if response.checkpoint.checkpoint_id != checkpoint_id:
            # A call with the same request id answered during our publish: its checkpoint is the one.
            await self._discard_if_uncommitted(key)
            return response
        if removed:
            log.info(
                "checkpoint retention for job %r removed %s", spec.job_id, [r.checkpoint_id for r in removed]
            )
            # Off the response path: their rows are gone, so the files are unreachable, and whatever a
            # crash leaves of them is an orphan that start-up removes.
            self._delete_files_later([r.blob_key for r in removed])
        return response

    def _delete_files_later(self, keys: list[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._delete_files(keys))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_files(self, keys: list[str]) -> None:
        for key in keys:
            try:
                await asyncio.to_thread(self._blobs.delete, key)
            except Exception:  # noqa: BLE001 - start-up recovery removes what is left
                log.warning("could not delete the files of checkpoint %s", key, exc_info=True)

    async def wait_for_background_deletes(self) -> None:
        """Waits until the files of checkpoints removed by retention are deleted."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _publish(self, tenant_id: str, checkpoint_id: str, spec: SaveSpec) -> bytes:
        """Hashes the files in parallel while the blob store writes them; returns the manifest."""
        digests = [_HASH_POOL.submit(_sha256_hex, content) for _, content in spec.files]
        written: list[bytes] = []

        def manifest() -> bytes:
            written.append(build_manifest(tenant_id, checkpoint_id, spec, [d.result() for d in digests]))
            return written[0]

        self._blobs.publish(checkpoint_id, spec.files, manifest, self._on_stage)
        return written[0]

    async def _add(
        self,
        session: Session,
        tenant_id: str,
        checkpoint_id: str,
        key: str,
        spec: SaveSpec,
        manifest: bytes,
    ) -> tuple[pb.SaveCheckpointResponse, list[CheckpointRecord]]:
        """The checkpoint's row and the rows retention removes, in the save's transaction."""
        await self._store.lock_job(session, tenant_id, spec.job_id)
        history = await self._store.history(session, tenant_id, spec.job_id)
        record = CheckpointRecord(
            tenant_id=tenant_id,
            checkpoint_id=checkpoint_id,
            job_id=spec.job_id,
            iteration=spec.iteration,
            policy_id=spec.policy_id,
            policy_version=spec.policy_version,
            metrics=spec.metrics,
            cumulative_cost_micro_usd=spec.cumulative_cost_micro_usd,
            size_bytes=sum(len(content) for _, content in spec.files),
            blob_key=key,
            manifest_sha256=hashlib.sha256(manifest).hexdigest(),
            manifest=manifest,
            create_time=self._store.next_create_time(history, utcnow()),
        )
        await self._store.add(session, record)
        victims = checkpoints_to_delete(
            [RetainedCheckpoint(r.checkpoint_id, r.metrics) for r in [*history, record]], spec.retention
        )
        # The history was read under the job's lock, so every victim is still there: one DELETE.
        removed = [r for r in history if r.checkpoint_id in set(victims)]
        await self._store.delete_history_rows(session, tenant_id, removed)
        response = pb.SaveCheckpointResponse(
            checkpoint=checkpoint_to_proto(record),
            deleted_checkpoint_ids=[r.checkpoint_id for r in removed],
        )
        if self._on_stage is not None:
            self._on_stage(SaveStage.BEFORE_COMMIT)
        return response, removed

    async def _discard_if_uncommitted(self, key: str) -> None:
        """Removes a save's files unless its row is committed (a failed COMMIT may still have landed)."""
        try:
            if await self._store.exists(key):
                return
            await asyncio.to_thread(self._blobs.delete, key)
        except Exception:  # noqa: BLE001 - start-up recovery removes what is left
            log.warning("could not clean up the files of failed checkpoint save %s", key, exc_info=True)

    # -- reads ---------------------------------------------------------------------------------------

    async def get(self, request: pb.GetCheckpointRequest) -> pb.GetCheckpointResponse:
        await self.ready()
        checkpoint_id = check_checkpoint_id(request.checkpoint_id)
        record = await self._store.get(current_tenant(), checkpoint_id)
        response = pb.GetCheckpointResponse(checkpoint=checkpoint_to_proto(record))
        if request.include_files:
            try:
                files = await asyncio.to_thread(verify_files, self._blobs, record)
            except CorruptCheckpoint as exc:
                log.warning("checkpoint %s failed verification: %s", record.checkpoint_id, exc.reason)
                raise CheckpointDataLoss(
                    f"checkpoint {record.checkpoint_id!r} failed verification: {exc.reason}",
                    metadata={"checkpoint_id": record.checkpoint_id, "reason": exc.reason},
                ) from exc
            response.files.extend(_files_to_proto(files))
        return response

    async def list(self, request: pb.ListCheckpointsRequest) -> pb.ListCheckpointsResponse:
        await self.ready()
        tenant_id = current_tenant()
        job_id = _check_id(request.job_id, "job_id", required=True)
        page_size = check_page_size(request.page_size or DEFAULT_PAGE_SIZE)
        scope = ["checkpoints", tenant_id, job_id]
        after = _position(decode_page_token(request.page_token, scope))
        records = await self._store.page(tenant_id, job_id, page_size + 1, after)
        response = pb.ListCheckpointsResponse(
            checkpoints=[checkpoint_to_proto(r) for r in records[:page_size]]
        )
        if len(records) > page_size:
            last = records[page_size - 1]
            response.next_page_token = encode_page_token(
                scope, [last.create_time.isoformat(), last.checkpoint_id]
            )
        return response

    async def latest(self, request: pb.GetLatestCheckpointRequest) -> pb.GetLatestCheckpointResponse:
        """The newest checkpoint of the job whose files verify; newer corrupt ones are named in `skipped`."""
        await self.ready()
        tenant_id = current_tenant()
        job_id = _check_id(request.job_id, "job_id", required=True)
        skipped: list[pb.SkippedCheckpoint] = []
        after: tuple[datetime, str] | None = None
        while True:
            records = await self._store.page(tenant_id, job_id, LATEST_SCAN_BATCH, after)
            for record in records:
                try:
                    files = await asyncio.to_thread(verify_files, self._blobs, record)
                except CorruptCheckpoint as exc:
                    log.warning(
                        "checkpoint %s of job %r failed verification (%s); falling back to an older one",
                        record.checkpoint_id,
                        job_id,
                        exc.reason,
                    )
                    skipped.append(
                        pb.SkippedCheckpoint(checkpoint_id=record.checkpoint_id, reason=exc.reason)
                    )
                    continue
                return pb.GetLatestCheckpointResponse(
                    checkpoint=checkpoint_to_proto(record),
                    files=_files_to_proto(files) if request.include_files else [],
                    skipped=skipped,
                )
            if len(records) < LATEST_SCAN_BATCH:
                break
            after = (records[-1].create_time, records[-1].checkpoint_id)
        if not skipped:
            raise NotFound(f"job {job_id!r} has no checkpoints")
        raise CheckpointDataLoss(
            f"every checkpoint of job {job_id!r} failed verification: "
            + "; ".join(f"{s.checkpoint_id}: {s.reason}" for s in skipped),
            metadata={"job_id": job_id, "skipped": str(len(skipped))},
        )

    # -- delete --------------------------------------------------------------------------------------

    async def delete(self, request: pb.DeleteCheckpointRequest) -> pb.DeleteCheckpointResponse:
        await self.ready()
        tenant_id = current_tenant()
        checkpoint_id = check_checkpoint_id(request.checkpoint_id)
        removed: list[CheckpointRecord] = []

        async def work(session) -> pb.DeleteCheckpointResponse:
            rows = await self._store.delete_rows(session, tenant_id, [checkpoint_id])
            if not rows:
                raise NotFound(f"checkpoint {checkpoint_id!r} not found")
            removed.extend(rows)
            return pb.DeleteCheckpointResponse(checkpoint_id=checkpoint_id)

        response = await idempotency.run_once(
            self._database, DELETE_SCOPE, request, pb.DeleteCheckpointResponse, work
        )
        for record in removed:  # files after the commit: a crash in between leaves an orphan, not a hole
            await asyncio.to_thread(self._blobs.delete, record.blob_key)
        return response


def _position(position: list | None) -> tuple[datetime, str] | None:
    if position is None:
        return None
    try:
        create_time, checkpoint_id = position
        parsed = datetime.fromisoformat(create_time)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("page_token", "is not a token returned by a previous call") from exc
    if parsed.tzinfo is None or not isinstance(checkpoint_id, str):
        raise InvalidArgument("page_token", "is not a token returned by a previous call")
    return parsed, checkpoint_id
