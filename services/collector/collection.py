"""`CollectGroup`: one query run N times concurrently, each rollout recorded, stored and streamed.

- Concurrency: every rollout of a collector process holds one slot of a process-wide semaphore
  (`settings.max_concurrent_rollouts`) and one of its request's (`max_concurrency`, default the
  group size) while it runs. Waiting for a slot does not count against the rollout's timeout.
- Each rollout runs under its timeout (the request's `rollout_timeout`, else
  `settings.rollout_timeout_seconds`). A rollout that raises, times out or is cancelled still yields
  a trajectory with its termination reason (ERROR, TIMEOUT, CANCELLED) and detail; the rest of the
  group goes on. Rollout i uses seed `seed + i`.
- Cancellation: when the client cancels the CollectGroup call, the rollouts still running are
  cancelled (the agent sees `asyncio.CancelledError`; a gRPC agent's `Run` call is cancelled), and
  their CANCELLED trajectories are stored in the background, so nothing that ran is lost.
- Storing: finished rollouts are written through `TrajectoryStore.ingest` by one `TrajectoryWriter`
  per process, which groups whatever finished while the previous write was in flight, across every
  group in flight (group commit): several rollouts per transaction, and no added wait when idle.
  Each trajectory is streamed back once stored, as stored (tenant, create time, usage and cost).
- Decisions: Python agents (and toolbench) decide in-process from a snapshot of the policy version
  (`TrainerService.GetPolicy` with parameters once per group; immutable versions are cached);
  gRPC agents call `TrainerService.Decide` with `trainer_address` and `api_key` from the RunRequest.
  `policy` is required for runtimes that must decide (toolbench); a Python agent run without one
  that asks for a decision fails that rollout (ERROR, FAILED_PRECONDITION detail).
- Idempotency: a request with a `request_id` is remembered (an idempotency record holding its group
  id) before its first rollout starts; a repeat replays the group's stored trajectories (found by
  group id and the label `cohort.request_id`) instead of running it again, after waiting for the
  original to finish when it is still running in this process.

Labels the collector adds to every trajectory: `cohort.rollout_index`, `cohort.seed` (the rollout's
seed, so any rollout can be reproduced) and, with a request id, `cohort.request_id`. Keys starting
with `cohort.` are reserved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from cohort.api.collector.v1 import collector_pb2
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.learning.exploration import check_exploration_rate
from cohort.platform.config import Settings
from cohort.platform.context import current_identity, current_tenant
from cohort.platform.errors import CohortError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cohort.platform.identity import SYSTEM_IDENTITY
from cohort.platform.ids import uuid7
from cohort.platform.storage import idempotency
from cohort.sdk.recorder import describe
from cohort.sdk.runtime import Decider, Task
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.collector.runtimes import Rollout, Runner, RuntimeResolver, StreamRecording
from cohort.services.collector.store import (
    IngestItemResult,
    ItemStatus,
    SearchQuery,
    TrajectoryFilter,
    TrajectoryStore,
    View,
    validate_trajectory,
)
from cohort.services.service_context import ServiceContext

log = logging.getLogger(__name__)

SCOPE = "cohort.api.collector.v1.CollectorService.CollectGroup"
DEFAULT_GROUP_SIZE = 8
RESERVED_LABEL_PREFIX = "cohort."
REQUEST_ID_LABEL = "cohort.request_id"
ROLLOUT_INDEX_LABEL = "cohort.rollout_index"
SEED_LABEL = "cohort.seed"
POLICY_CACHE_SIZE = 32
WRITE_BATCH_ITEMS = 256
WRITERS = 2
"""Store writes in flight at once on PostgreSQL: one batch prepared (worker thread) while another is
written. SQLite gets one (it has a single writer)."""
TRAINER_TIMEOUT_SECONDS = 30.0


# --- The plan of a group -------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupPlan:
    """A validated `CollectGroupRequest`."""

    request: collector_pb2.CollectGroupRequest
    group_id: str
    group_size: int
    max_concurrency: int
    timeout_seconds: float
    seed: int
    labels: dict[str, str] = field(default_factory=dict)

    def rollout(self, index: int, runner: Runner, task: Task, policy: trajectory_pb2.PolicyRef) -> Rollout:
        request = self.request
        seed = self.seed + index
        labels = {**self.labels, ROLLOUT_INDEX_LABEL: str(index), SEED_LABEL: str(seed)}
        return Rollout(
            index=index,
            trajectory_id=uuid7(),
            query=request.query,
            task=task,
            seed=seed,
            greedy=request.greedy,
            exploration=0.0 if request.greedy else request.exploration,
            max_steps=request.max_steps,
            timeout_seconds=self.timeout_seconds,
            job_id=request.job_id,
            group_id=self.group_id,
            iteration=request.iteration,
            agent=request.runtime.agent if request.runtime.agent.name else runner.agent,
            policy=policy,
            labels=labels,
        )


def plan_group(request: collector_pb2.CollectGroupRequest, settings: Settings) -> GroupPlan:
    """Checks every field that does not need the runtime or the policy; INVALID_ARGUMENT naming it."""
    bound = settings.max_group_size
    if request.group_size < 0 or request.group_size > bound:
        raise InvalidArgument("group_size", f"must be between 1 and {bound} (0 means {DEFAULT_GROUP_SIZE})")
    group_size = request.group_size or min(DEFAULT_GROUP_SIZE, bound)
    if request.max_concurrency < 0:
        raise InvalidArgument("max_concurrency", "must not be negative (0 means the group size)")
    if request.seed < 0:
        raise InvalidArgument("seed", f"must be >= 0, got {request.seed}")
    max_concurrency = min(request.max_concurrency or group_size, group_size)
    if request.HasField("rollout_timeout"):
        timeout = request.rollout_timeout.ToNanoseconds() / 1e9
        if timeout <= 0:
            raise InvalidArgument("rollout_timeout", "must be positive")
    else:
        timeout = settings.rollout_timeout_seconds
    if request.max_steps < 0:
        raise InvalidArgument("max_steps", "must not be negative (0 means the runtime's default)")
    if request.iteration < 0:
        raise InvalidArgument("iteration", "must not be negative")
    check_exploration_rate(request.exploration, "exploration")  # refused before any rollout runs
    query = request.query
    if not request.HasField("query") or not (query.text or query.query_id or query.payload_json):
        raise InvalidArgument("query", "is required: the text (or id and payload) every rollout answers")
    if request.policy.policy_id and request.policy.version < 0:
        raise InvalidArgument("policy.version", "must not be negative (0 means the latest)")
    if not request.policy.policy_id and request.policy.version:
        raise InvalidArgument("policy.policy_id", "is required when `policy.version` is set")
    for key in request.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise InvalidArgument(
                f"labels[{key}]", f"keys starting with {RESERVED_LABEL_PREFIX!r} are reserved"
            )
    labels = dict(request.labels)
    if request.request_id:
        if len(request.request_id) > idempotency.MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id", f"must be at most {idempotency.MAX_REQUEST_ID_LENGTH} characters"
            )
        labels[REQUEST_ID_LABEL] = request.request_id
    group_id = request.group_id or str(uuid.uuid4())
    # The tags every trajectory will carry must be storable: check them now, not after the group ran.
    template = trajectory_pb2.Trajectory(
        agent=request.runtime.agent,
        job_id=request.job_id,
        group_id=group_id,
        iteration=request.iteration,
        query_id=query.query_id,
        labels=labels,
    )
    try:
        validate_trajectory(template)
    except InvalidArgument as error:
        raise InvalidArgument(error.field.removeprefix("trajectory."), error.description) from None
    seed = request.seed if request.HasField("seed") else secrets.randbits(31)
    return GroupPlan(
        request=request,
        group_id=group_id,
        group_size=group_size,
        max_concurrency=max_concurrency,
        timeout_seconds=timeout,
        seed=seed,
        labels=labels,
    )


# --- Policy snapshots ----------------------------------------------------------------------------


class PolicySnapshots:
    """Policy versions fetched from the trainer; immutable versions cached per tenant (LRU)."""

    def __init__(self, context: ServiceContext, size: int = POLICY_CACHE_SIZE) -> None:
        self._context = context
        self._size = size
        self._cache: OrderedDict[tuple[str, str, int], Any] = OrderedDict()

    def _stub(self) -> trainer_pb2_grpc.TrainerServiceStub:
        return trainer_pb2_grpc.TrainerServiceStub(self._context.channels.channel("trainer"))

    async def describe(self, ref: trajectory_pb2.PolicyRef) -> trainer_pb2.Policy:
        """The policy version without parameters (its heads and resolved version)."""
        return await self._get(ref, include_parameters=False)

    async def snapshot(self, ref: trajectory_pb2.PolicyRef) -> Any:
        """A `cohort.policy.PolicySnapshot` of `ref` (version 0: the latest)."""
        from cohort.policy import PolicySnapshot

        tenant = current_tenant()
        version = ref.version
        if not version:
            version = (await self.describe(ref)).version
        key = (tenant, ref.policy_id, version)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        policy = await self._get(
            trajectory_pb2.PolicyRef(policy_id=ref.policy_id, version=version), include_parameters=True
        )
        snapshot = await asyncio.to_thread(PolicySnapshot.from_proto, policy)
        self._cache[key] = snapshot
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return snapshot

    async def _get(self, ref: trajectory_pb2.PolicyRef, *, include_parameters: bool) -> trainer_pb2.Policy:
        request = trainer_pb2.GetPolicyRequest(
            policy_id=ref.policy_id, version=ref.version, include_parameters=include_parameters
        )
        try:
            response = await self._stub().GetPolicy(request, timeout=TRAINER_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _policy_error(error, ref, self._context.settings.address_of("trainer")) from None
        return response.policy


def _policy_error(error: grpc.aio.AioRpcError, ref: trajectory_pb2.PolicyRef, trainer: str) -> CohortError:
    what = f"policy {ref.policy_id!r}" + (f" version {ref.version}" if ref.version else "")
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} was not found: {error.details()}", metadata={"field": "policy"})
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("policy", error.details() or "rejected by the trainer")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the trainer at {trainer} did not answer for {what}: {error.details()}")
    return FailedPrecondition(f"the trainer could not serve {what}: {code.name}: {error.details()}")


def _check_heads(policy_heads: Sequence[str], required: Sequence[str], ref: trajectory_pb2.PolicyRef) -> None:
    missing = [head for head in required if head not in policy_heads]
    if missing:
        raise NotFound(
            f"policy {ref.policy_id!r} version {ref.version} has no head {missing[0]!r}; "
            f"this runtime decides with heads {', '.join(required)}",
            metadata={"field": "policy", "head": missing[0]},
        )


# --- Storing, batched across groups -----------------------------------------------------------


class TrajectoryWriter:
    """Group commit over `TrajectoryStore.ingest`: what finished while a write ran goes in the next one."""

    def __init__(
        self, store: TrajectoryStore, *, batch_items: int = WRITE_BATCH_ITEMS, writers: int = WRITERS
    ):
        self._store = store
        self._batch_items = batch_items
        self._writers = writers
        self._pending: list[tuple[str, trajectory_pb2.Trajectory, asyncio.Future]] = []
        self._drainers: set[asyncio.Task] = set()

    async def write(
        self, tenant_id: str, trajectories: Sequence[trajectory_pb2.Trajectory]
    ) -> list[IngestItemResult]:
        """Stores `trajectories` (modified in place as `ingest` does); per-item results in order."""
        loop = asyncio.get_running_loop()
        futures = []
        for trajectory in trajectories:
            future = loop.create_future()
            self._pending.append((tenant_id, trajectory, future))
            futures.append(future)
        # A drainer is done in the same step as it finds `_pending` empty; it leaves `_drainers` only
        # later, in its done callback, so counting members would let a write in between wait forever.
        if sum(not task.done() for task in self._drainers) < self._writers:
            task = loop.create_task(self._drain())
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        # Shielded: a caller cancelled mid-write leaves the write to finish for the others in it.
        return list(await asyncio.shield(asyncio.gather(*futures)))

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._batch_items]
            del self._pending[: self._batch_items]
            by_tenant: dict[str, list[tuple[trajectory_pb2.Trajectory, asyncio.Future]]] = {}
            for tenant_id, trajectory, future in batch:
                by_tenant.setdefault(tenant_id, []).append((trajectory, future))
            for tenant_id, items in by_tenant.items():
                try:
                    result = await self._store.ingest(tenant_id, [trajectory for trajectory, _ in items])
                except BaseException as error:  # noqa: BLE001 - handed to every waiter of the batch
                    for _, future in items:
                        if not future.done():
                            future.set_exception(
                                error if isinstance(error, Exception) else RuntimeError(str(error))
                            )
                    if not isinstance(error, Exception):
                        raise
                    continue
                for (_, future), item in zip(items, result.items, strict=True):
                    if not future.done():
                        future.set_result(item)


# --- The collector -------------------------------------------------------------------------------


class Collector:
    """Runs `CollectGroup` requests; one per collector process (it owns the global rollout bound)."""

    def __init__(self, context: ServiceContext, store: TrajectoryStore, *, prices: PriceTable) -> None:
        self._context = context
        self._store = store
        # SQLite has one writer: a second transaction would only sit in SQLite's busy-wait backoff.
        self._writer = TrajectoryWriter(store, writers=1 if context.database.is_sqlite else WRITERS)
        self._runtimes = RuntimeResolver(prices)
        self._policies = PolicySnapshots(context)
        self._global_limit = asyncio.Semaphore(context.settings.max_concurrent_rollouts)
        self._running: dict[tuple[str, str], asyncio.Event] = {}
        self._agent_keys: dict[str, str] = {}
        self._agent_key_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    @property
    def settings(self) -> Settings:
        return self._context.settings  # replaced once every server is bound: read it at call time

    async def collect_group(
        self, request: collector_pb2.CollectGroupRequest, *, caller_api_key: str = ""
    ) -> AsyncIterator[collector_pb2.CollectGroupResponse]:
        """Runs the group and yields each rollout once stored; a repeated request id replays it."""
        tenant_id = current_tenant()
        plan = plan_group(request, self.settings)
        running_key = (tenant_id, request.request_id)
        indices = range(plan.group_size)
        if request.request_id:
            previous = await self._previous(request)
            if previous is not None:
                was_running_here = running_key in self._running
                replayed = set()
                async for response in self._replay(tenant_id, request.request_id, previous):
                    replayed.add(response.rollout_index)
                    yield response
                if was_running_here or running_key in self._running:
                    return
                # The first call's process died midway (a restart): run the rollouts it never stored,
                # with their own seeds, so the group ends as it would have.
                indices = [i for i in range(plan.group_size) if i not in replayed]
                if not indices:
                    return
                plan = dataclasses.replace(plan, group_id=previous)
        if request.runtime.WhichOneof("kind") == "grpc":
            caller_api_key = await self._key_for_agents(caller_api_key)
        runner = self._runtimes.resolve(
            request.runtime, settings=self.settings, caller_api_key=caller_api_key
        )
        task = runner.task_of(request.query)
        policy, decider = await self._policy_for(runner, request.policy)
        await runner.prepare()
        if request.request_id:
            if len(indices) == plan.group_size:
                group_id = await self._remember(request, plan.group_id)
                if group_id != plan.group_id:  # another call with this id got there first
                    async for response in self._replay(tenant_id, request.request_id, group_id):
                        yield response
                    return
            self._running[running_key] = done = asyncio.Event()
        try:
            async for response in self._run(tenant_id, plan, runner, task, policy, decider, indices):
                yield response
        finally:
            if request.request_id:
                self._running.pop(running_key, None)
                done.set()

    async def _key_for_agents(self, caller_api_key: str) -> str:
        """The key a remote agent gets to call Decide with: never an admin key (a job's calls come
        with the service credential, and the agent's address is the user's to choose), but a key of
        the tenant alone, minted once per tenant and process; a tenant's own key is passed on."""
        identity = current_identity.get()
        if not self.settings.auth_enabled or identity is None or not identity.is_admin:
            return caller_api_key
        tenant = identity.tenant_id
        async with self._agent_key_lock:
            if tenant not in self._agent_keys:
                _, secret = await self._context.api_keys.create_key(
                    SYSTEM_IDENTITY,
                    f"agent runtime key (collector {socket.gethostname()}:{os.getpid()})",
                    tenant_id=tenant,
                )
                self._agent_keys[tenant] = secret
            return self._agent_keys[tenant]

    async def _policy_for(
        self, runner: Runner, ref: trajectory_pb2.PolicyRef
    ) -> tuple[trajectory_pb2.PolicyRef, Decider | None]:
        if not ref.policy_id:
            if runner.needs_policy:
                raise InvalidArgument(
                    "policy", f"is required: the {runner.kind} runtime decides with a policy"
                )
            return trajectory_pb2.PolicyRef(), None
        if runner.kind == "grpc":  # the agent decides remotely: check the version exists, pin it
            policy = await self._policies.describe(ref)
            resolved = trajectory_pb2.PolicyRef(policy_id=ref.policy_id, version=policy.version)
            _check_heads([head.name for head in policy.heads], runner.required_heads, resolved)
            return resolved, None
        from cohort.policy import LocalDecider

        snapshot = await self._policies.snapshot(ref)
        resolved = trajectory_pb2.PolicyRef(policy_id=ref.policy_id, version=snapshot.version)
        _check_heads(list(snapshot.heads), runner.required_heads, resolved)
        return resolved, LocalDecider(snapshot)

    # -- running the group --

    async def _run(
        self,
        tenant_id: str,
        plan: GroupPlan,
        runner: Runner,
        task: Task,
        policy: trajectory_pb2.PolicyRef,
        decider: Decider | None,
        indices: Sequence[int],
    ) -> AsyncIterator[collector_pb2.CollectGroupResponse]:
        request_limit = asyncio.Semaphore(plan.max_concurrency)
        rollouts = [plan.rollout(i, runner, task, policy) for i in indices]
        finished: asyncio.Queue[asyncio.Task] = asyncio.Queue()
        tasks: dict[asyncio.Task, Rollout] = {}
        for rollout in rollouts:
            rollout_task = asyncio.create_task(self._rollout(runner, rollout, decider, request_limit))
            rollout_task.add_done_callback(finished.put_nowait)
            tasks[rollout_task] = rollout
        taken: set[asyncio.Task] = set()
        store_failed = False
        try:
            while len(taken) < len(tasks):
                batch = [await finished.get()]
                while not finished.empty():
                    batch.append(finished.get_nowait())
                taken.update(batch)
                trajectories = [_result_of(done, tasks[done]) for done in batch]
                try:
                    results = await self._writer.write(tenant_id, trajectories)
                except Exception:
                    store_failed = True  # the database is unavailable: the caller's retry reruns the rest
                    raise
                for done, trajectory, item in zip(batch, trajectories, results, strict=True):
                    _note_store_failure(trajectory, item, self._store)
                    yield collector_pb2.CollectGroupResponse(
                        trajectory=trajectory, rollout_index=tasks[done].index
                    )
        finally:
            leftover = {t: r for t, r in tasks.items() if t not in taken}
            if leftover:
                for rollout_task in leftover:
                    rollout_task.cancel()
                # A cancelled call's rollouts are stored as cancelled; after a failed write they are
                # not, so a retry of the request runs them again instead of replaying cancellations.
                if not store_failed:
                    self._in_background(self._store_leftovers(tenant_id, leftover))

    async def _rollout(
        self, runner: Runner, rollout: Rollout, decider: Decider | None, request_limit: asyncio.Semaphore
    ) -> trajectory_pb2.Trajectory:
        """Runs one rollout; never raises: every ending is a trajectory with its termination."""
        recording = None
        deadline = None
        try:
            async with request_limit, self._global_limit:
                recording = runner.recording(rollout)
                async with asyncio.timeout(rollout.timeout_seconds) as deadline:
                    await runner.run(rollout, recording, decider)
        except asyncio.CancelledError:
            recording = recording or StreamRecording(rollout, address="")
            recording.fail("cancelled", "the rollout was cancelled: the CollectGroup call was cancelled")
        except TimeoutError as error:
            recording = recording or StreamRecording(rollout, address="")
            if deadline is not None and deadline.expired():
                recording.fail(
                    "timeout", f"the rollout ran past its timeout of {rollout.timeout_seconds:g} s"
                )
            else:
                recording.fail("timeout", describe(error))
        except Exception as error:  # noqa: BLE001 - the agent's failure ends this rollout alone
            recording = recording or StreamRecording(rollout, address="")
            recording.fail("error", describe(error))
        try:
            return recording.trajectory()
        except Exception as error:  # noqa: BLE001 - e.g. an agent result the recorder rejects
            fallback = StreamRecording(rollout, address="")
            fallback.fail("error", f"the trajectory could not be built: {describe(error)}")
            return fallback.trajectory()

    async def _store_leftovers(self, tenant_id: str, leftover: dict[asyncio.Task, Rollout]) -> None:
        """Stores the rollouts of a cancelled call once they have recorded their cancellation."""
        await asyncio.wait(list(leftover))
        trajectories = [_result_of(done, rollout) for done, rollout in leftover.items()]
        try:
            await self._writer.write(tenant_id, trajectories)
        except Exception:
            log.exception("could not store %d rollouts of a cancelled group", len(trajectories))

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- idempotency --

    async def _previous(self, request: collector_pb2.CollectGroupRequest) -> str | None:
        marker = await idempotency.find_answer(
            self._context.database, SCOPE, request, collector_pb2.CollectGroupResponse
        )
        return None if marker is None else marker.trajectory.group_id

    async def _remember(self, request: collector_pb2.CollectGroupRequest, group_id: str) -> str:
        """Records that this request id runs as `group_id`; the group id of the first call with it."""

        async def marker(session: Any) -> collector_pb2.CollectGroupResponse:
            return collector_pb2.CollectGroupResponse(trajectory=trajectory_pb2.Trajectory(group_id=group_id))

        response = await idempotency.run_once(
            self._context.database, SCOPE, request, collector_pb2.CollectGroupResponse, marker
        )
        return response.trajectory.group_id

    async def _replay(
        self, tenant_id: str, request_id: str, group_id: str
    ) -> AsyncIterator[collector_pb2.CollectGroupResponse]:
        running = self._running.get((tenant_id, request_id))
        if running is not None:
            await running.wait()
        stored: list[trajectory_pb2.Trajectory] = []
        token = ""
        while True:
            query = SearchQuery(
                filter=TrajectoryFilter(group_id=group_id, labels=((REQUEST_ID_LABEL, request_id),)),
                page_size=1000,
                page_token=token,
                view=View.FULL,
            )
            hits, token = await self._store.search(tenant_id, query)
            stored.extend(hit.trajectory for hit in hits)
            if not token:
                break
        stored.sort(key=_rollout_index)
        for trajectory in stored:
            yield collector_pb2.CollectGroupResponse(
                trajectory=trajectory, rollout_index=_rollout_index(trajectory)
            )

    async def close(self) -> None:
        await self._runtimes.close()


def _rollout_index(trajectory: trajectory_pb2.Trajectory) -> int:
    try:
        return int(trajectory.labels.get(ROLLOUT_INDEX_LABEL, "0"))
    except ValueError:
        return 0


def _result_of(done: asyncio.Task, rollout: Rollout) -> trajectory_pb2.Trajectory:
    if done.cancelled():  # cancelled before it ever ran
        recording = StreamRecording(rollout, address="")
        recording.fail("cancelled", "the rollout was cancelled before it started")
        return recording.trajectory()
    return done.result()


def _note_store_failure(
    trajectory: trajectory_pb2.Trajectory, item: IngestItemResult, store: TrajectoryStore
) -> None:
    """A rollout the store refused is still reported, as ERROR saying why it is not stored, and
    redacted as the store would have (the recording left that to the store)."""
    if item.status is ItemStatus.FAILED:
        store.redact(trajectory)
        log.warning("rollout %s not stored: %s", trajectory.trajectory_id, item.error)
        trajectory.termination_reason = trajectory_pb2.TERMINATION_REASON_ERROR
        trajectory.termination_detail = f"not stored: {item.error}"
