"""The trainer's domain logic: creating policies, serving decisions, GRPO updates.

Decisions are the hot path. A `Decide` never reads weights from the database twice: immutable
`(tenant, policy, version)` snapshots live in an in-memory LRU, and "latest" (version 0) is resolved
from a per-policy cache entry that lives `LATEST_TTL_SECONDS`. That is safe because versions are
immutable (a cached snapshot can never be wrong, only old), and a new version made by this process
refreshes the entry at once; a version made by another replica is seen here within
`LATEST_TTL_SECONDS`, which is the most "latest" can lag. Updates are optimistic: they name their
base version and only the one that is still the latest wins (`stale base version` otherwise).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.learning import AdamState, HeadBatch, encode_checked, grpo_update
from cohort.platform.context import current_tenant
from cohort.platform.errors import AlreadyExists, CohortError, FailedPrecondition, InvalidArgument, NotFound
from cohort.platform.paging import DEFAULT_PAGE_SIZE
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database
from cohort.policy import (
    CheckedDecision,
    HeadSpec,
    PolicySnapshot,
    check_recorded_decision,
    check_weights,
)
from cohort.policy import heads_from_proto as parse_heads
from cohort.sdk.runtime import DecisionRequest
from cohort.services.trainer.convert import (
    adam_state_from_proto,
    adam_state_to_proto,
    grpo_settings_from_proto,
)
from cohort.services.trainer.store import PolicyStore, PolicyVersion

LATEST_TTL_SECONDS = 1.0
SNAPSHOT_CACHE_ENTRIES = 256
WRITTEN_VERSIONS_CACHED = 1024
SNAPSHOT_CACHE_BYTES = 1 << 30
MAX_DISPLAY_NAME = 200
_POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

CREATE_SCOPE = "cohort.api.trainer.v1.TrainerService.CreatePolicy"
UPDATE_SCOPE = "cohort.api.trainer.v1.TrainerService.UpdatePolicy"


def new_policy_id() -> str:
    return f"policy-{uuid.uuid4().hex[:20]}"


def check_policy_id(policy_id: str, field: str = "policy_id") -> str:
    if not policy_id:
        raise InvalidArgument(field, "must not be empty")
    if not _POLICY_ID.fullmatch(policy_id):
        raise InvalidArgument(
            field, "must be 1 to 128 letters, digits or ._- starting with a letter or digit"
        )
    return policy_id


class SnapshotCache:
    """An LRU of immutable policy versions by (tenant, policy, version), bounded in entries and bytes."""

    def __init__(
        self, max_entries: int = SNAPSHOT_CACHE_ENTRIES, max_bytes: int = SNAPSHOT_CACHE_BYTES
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, int], PolicySnapshot] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str, int]) -> PolicySnapshot | None:
        snapshot = self._entries.get(key)
        if snapshot is not None:
            self._entries.move_to_end(key)
        return snapshot

    def put(self, key: tuple[str, str, int], snapshot: PolicySnapshot) -> None:
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = snapshot
        self._bytes += _size(snapshot)
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= _size(evicted)


def _size(snapshot: PolicySnapshot) -> int:
    return sum(weights.nbytes for weights in snapshot.weights.values())


@dataclass
class HeadColumns:
    """One head's usable decisions, as `check_recorded_decision` read them, with the log-probability
    each chosen option had when it was chosen and its advantage."""

    checked: list[CheckedDecision] = field(default_factory=list)
    old_log_prob: list[float] = field(default_factory=list)
    advantage: list[float] = field(default_factory=list)


class TrainerService:
    def __init__(self, database: Database, *, latest_ttl_seconds: float = LATEST_TTL_SECONDS) -> None:
        self.store = PolicyStore(database)
        self.database = database
        self.latest_ttl_seconds = latest_ttl_seconds
        self._snapshots = SnapshotCache()
        self._latest: dict[tuple[str, str], tuple[int, float]] = {}
        self._loading: dict[tuple[str, str, int], asyncio.Future[PolicySnapshot]] = {}
        # The version each policy's last update here wrote: the next update's base, usually. Safe when
        # another replica has moved on since: `insert_version`'s conditional UPDATE then refuses it.
        self._written: OrderedDict[tuple[str, str], PolicyVersion] = OrderedDict()

    # --- Create, get, list ---------------------------------------------------------------------

    async def create_policy(
        self, request: trainer_pb2.CreatePolicyRequest
    ) -> trainer_pb2.CreatePolicyResponse:
        tenant_id = current_tenant()
        heads = parse_heads(request.heads, "heads")
        if len(request.display_name) > MAX_DISPLAY_NAME:
            raise InvalidArgument("display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
        policy_id = check_policy_id(request.policy_id) if request.policy_id else ""
        weights = initial_weights(heads, request.initial_parameters)

        async def work(session) -> trainer_pb2.CreatePolicyResponse:
            created = await self.store.insert_policy(
                session, tenant_id, policy_id or new_policy_id(), request.display_name, heads, weights
            )
            return trainer_pb2.CreatePolicyResponse(policy=created.to_proto())

        return await idempotency.run_once(
            self.database,
            CREATE_SCOPE,
            request,
            trainer_pb2.CreatePolicyResponse,
            work,
            conflict=AlreadyExists(f"policy {policy_id!r} already exists"),  # a concurrent create won
        )

    async def get_policy(self, policy_id: str, version: int, include_parameters: bool) -> trainer_pb2.Policy:
        check_policy_id(policy_id)
        if version < 0:
            raise InvalidArgument("version", "must be >= 0 (0 means the latest)")
        found = await self.store.get(current_tenant(), policy_id, version)
        self._remember_latest(found.info.tenant_id, policy_id, found.info.latest_version)
        return found.to_proto(include_parameters)

    async def list_policies(self, page_size: int, page_token: str) -> tuple[list[trainer_pb2.Policy], str]:
        return await self.store.list(current_tenant(), page_size or DEFAULT_PAGE_SIZE, page_token)

    # --- Decide -------------------------------------------------------------------------------

    async def decide(self, policy_id: str, version: int, request: DecisionRequest) -> trajectory_pb2.Decision:
        """A decision of `policy_id` at `version` (0: the latest); `NotFound` names the policy, the
        version or the head. Evaluated inline: it costs tens of microseconds, less than a thread hop."""
        if not policy_id:
            raise InvalidArgument("policy_id", "must not be empty")
        if version < 0:
            raise InvalidArgument("version", "must be >= 0 (0 means the latest)")
        if not request.head:
            raise InvalidArgument("head", "must not be empty")
        tenant_id = current_tenant()
        if version == 0:
            version = await self._latest_version(tenant_id, policy_id)
        snapshot = await self.snapshot(tenant_id, policy_id, version)
        return snapshot.decide(request)

    async def snapshot(self, tenant_id: str, policy_id: str, version: int) -> PolicySnapshot:
        """A version's immutable snapshot: from the LRU, or loaded once (concurrent misses share a load)."""
        key = (tenant_id, policy_id, version)
        snapshot = self._snapshots.get(key)
        if snapshot is not None:
            return snapshot
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key))
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(loading)

    async def _load(self, key: tuple[str, str, int]) -> PolicySnapshot:
        tenant_id, policy_id, version = key
        found = await self.store.get(tenant_id, policy_id, version)
        self._snapshots.put(key, found.snapshot)
        return found.snapshot

    async def _latest_version(self, tenant_id: str, policy_id: str) -> int:
        cached = self._latest.get((tenant_id, policy_id))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        # Expired (or never read): the calls that find it so share one read of the latest version
        # and its snapshot instead of a database read each. In flight under version 0, which no
        # version has ("0 means the latest"), beside the loads of `snapshot`.
        key = (tenant_id, policy_id, 0)
        loading = self._loading.get(key)
        if loading is None:

            async def load_latest() -> PolicySnapshot:
                latest = await self.store.latest_version(tenant_id, policy_id)
                self._remember_latest(tenant_id, policy_id, latest)
                return await self.snapshot(tenant_id, policy_id, latest)

            loading = asyncio.ensure_future(load_latest())
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return (await asyncio.shield(loading)).version

    def _remember_written(self, tenant_id: str, written: PolicyVersion) -> None:
        key = (tenant_id, written.info.policy_id)
        self._written[key] = written
        self._written.move_to_end(key)
        while len(self._written) > WRITTEN_VERSIONS_CACHED:
            self._written.popitem(last=False)

    def _remember_latest(self, tenant_id: str, policy_id: str, version: int) -> None:
        key = (tenant_id, policy_id)
        cached = self._latest.get(key)
        if cached is not None and cached[0] > version and cached[1] > time.monotonic():
            return  # never step back to an older "latest" read by a slower concurrent call
        self._latest[key] = (version, time.monotonic() + self.latest_ttl_seconds)

    # --- Update -------------------------------------------------------------------------------

    async def update_policy(
        self, request: trainer_pb2.UpdatePolicyRequest
    ) -> trainer_pb2.UpdatePolicyResponse:
        tenant_id = current_tenant()
        check_policy_id(request.policy_id)
        if request.base_version < 1:
            raise InvalidArgument("base_version", "must be the policy's latest version (>= 1)")
        if request.reference_version < 0:
            raise InvalidArgument("reference_version", "must be >= 0 (0 means version 1)")
        if not request.trajectories:
            raise InvalidArgument("trajectories", "at least one scored trajectory is required")
        settings = grpo_settings_from_proto(request.config)

        previous = await idempotency.find_answer(
            self.database, UPDATE_SCOPE, request, trainer_pb2.UpdatePolicyResponse
        )
        if previous is not None:
            return previous

        base = self._written.get((tenant_id, request.policy_id))
        if base is None or base.snapshot.version != request.base_version:
            base = await self.store.get(tenant_id, request.policy_id, request.base_version)
        if base.info.latest_version != request.base_version:
            raise FailedPrecondition(
                f"stale base version: {request.base_version} is not the latest version "
                f"({base.info.latest_version}) of policy {request.policy_id!r}",
                reason="STALE_BASE_VERSION",
            )
        weights = {name: np.array(w) for name, w in base.snapshot.weights.items()}
        if request.HasField("optimizer_state"):
            optimizer = adam_state_from_proto(request.optimizer_state, weights)
        elif base.optimizer_state is not None:
            optimizer = adam_state_from_proto(base.optimizer_state, weights)
        else:
            optimizer = AdamState.zeros(weights)
        reference: dict[str, np.ndarray] | None = None
        if settings.kl_beta > 0:
            reference_version = request.reference_version or 1
            if reference_version > request.base_version:
                raise InvalidArgument("reference_version", f"version {reference_version} does not exist yet")
            reference = (await self.snapshot(tenant_id, request.policy_id, reference_version)).weights

        def compute():
            # Reading 1,000+ recorded decisions is milliseconds of CPU: off the loop with the math.
            usable, by_head, rejected = select_trajectories(
                base.snapshot, request.trajectories, request.base_version, settings.max_policy_staleness
            )
            if not usable:
                return usable, rejected, None, None
            batches = {
                name: HeadBatch(
                    batch=encode_checked(base.snapshot.heads[name], columns.checked),
                    old_log_prob=np.array(columns.old_log_prob, dtype=np.float64),
                    advantage=np.array(columns.advantage, dtype=np.float64),
                    reference_weights=None if reference is None else reference[name],
                )
                for name, columns in by_head.items()
            }
            result = grpo_update(weights, batches, optimizer, settings)
            return usable, rejected, result, adam_state_to_proto(result.optimizer)

        usable, rejected, result, optimizer_proto = await asyncio.to_thread(compute)
        response = trainer_pb2.UpdatePolicyResponse(rejected=rejected)
        if not usable:
            # Nothing to learn from: no new version (the response's policy is the base version).
            response.policy.CopyFrom(base.to_proto())
            response.optimizer_state.CopyFrom(adam_state_to_proto(optimizer))

            async def unchanged(session) -> trainer_pb2.UpdatePolicyResponse:
                return response

            return await idempotency.run_once(
                self.database, UPDATE_SCOPE, request, trainer_pb2.UpdatePolicyResponse, unchanged
            )

        rewards = [trajectory.reward for trajectory in usable if trajectory.HasField("reward")]
        response.metrics.CopyFrom(
            trainer_pb2.UpdateMetrics(
                loss=result.loss,
                kl=result.kl,
                entropy=result.entropy,
                clip_fraction=result.clip_fraction,
                grad_norm=result.grad_norm,
                grad_norm_clipped=result.grad_norm_clipped,
                reward_mean=float(np.mean(rewards)) if rewards else 0.0,
                reward_std=float(np.std(rewards)) if rewards else 0.0,
                groups_used=len({trajectory.group_id for trajectory in usable if trajectory.group_id}),
                decisions=result.decisions,
                trajectories_used=len(usable),
                update_norm=result.update_norm,
            )
        )
        response.optimizer_state.CopyFrom(optimizer_proto)
        inserted: list[PolicyVersion] = []

        async def insert_version(session) -> trainer_pb2.UpdatePolicyResponse:
            version = await self.store.insert_version(session, base, result.weights, optimizer_proto)
            inserted.append(version)
            response.policy.CopyFrom(version.to_proto())
            return response

        answer = await idempotency.run_once(
            self.database,
            UPDATE_SCOPE,
            request,
            trainer_pb2.UpdatePolicyResponse,
            insert_version,
            # No answer to this request: another update's version won.
            conflict=FailedPrecondition(
                f"stale base version: another update of policy {request.policy_id!r} "
                f"from version {request.base_version} won",
                reason="STALE_BASE_VERSION",
            ),
        )
        if answer is not response:  # a concurrent call with this request id answered first
            return answer
        created = inserted[0]
        self._snapshots.put((tenant_id, request.policy_id, created.snapshot.version), created.snapshot)
        self._remember_written(tenant_id, created)
        self._remember_latest(tenant_id, request.policy_id, created.snapshot.version)
        return response


def initial_weights(
    heads: dict[str, HeadSpec], parameters: Sequence[trainer_pb2.HeadParameters]
) -> dict[str, np.ndarray]:
    """Version 1's weights: the given ones, zeros (uniform) for heads not listed."""
    weights = {name: np.zeros(head.feature_buckets, dtype=np.float64) for name, head in heads.items()}
    given: set[str] = set()
    for i, entry in enumerate(parameters):
        head = heads.get(entry.head)
        if head is None:
            raise InvalidArgument(f"initial_parameters[{i}].head", f"the policy has no head {entry.head!r}")
        if entry.head in given:
            raise InvalidArgument(f"initial_parameters[{i}].head", f"head {entry.head!r} is listed twice")
        given.add(entry.head)
        weights[entry.head] = check_weights(head, entry.weights, f"initial_parameters[{i}].weights")
    return weights


def select_trajectories(
    base: PolicySnapshot,
    trajectories: Sequence[trajectory_pb2.Trajectory],
    base_version: int,
    max_staleness: int,
) -> tuple[list[trajectory_pb2.Trajectory], dict[str, HeadColumns], list[trainer_pb2.RejectedTrajectory]]:
    """The trajectories an update can use, their decisions by head, and the other trajectories with
    the reason each is left out."""
    usable: list[trajectory_pb2.Trajectory] = []
    by_head: dict[str, HeadColumns] = {}
    rejected: list[trainer_pb2.RejectedTrajectory] = []
    oldest = base_version - max_staleness
    for index, trajectory in enumerate(trajectories):
        try:
            decisions = _usable_decisions(base, trajectory, base_version, oldest)
        except CohortError as error:
            rejected.append(
                trainer_pb2.RejectedTrajectory(
                    trajectory_id=trajectory.trajectory_id or f"trajectories[{index}]", reason=error.message
                )
            )
            continue
        usable.append(trajectory)
        for name, checked, advantage in decisions:
            columns = by_head.get(name)
            if columns is None:
                columns = by_head[name] = HeadColumns()
            columns.checked.append(checked)
            columns.old_log_prob.append(checked[4])
            columns.advantage.append(advantage)
    return usable, by_head, rejected


def _usable_decisions(
    base: PolicySnapshot, trajectory: trajectory_pb2.Trajectory, base_version: int, oldest: int
) -> list[tuple[str, CheckedDecision, float]]:
    """Each decision of `trajectory` as (head name, what `check_recorded_decision` read, advantage);
    the first problem with any of them rejects the whole trajectory."""
    policy_id = base.policy_id
    if trajectory.policy.policy_id and trajectory.policy.policy_id != policy_id:
        raise InvalidArgument("policy", f"collected by another policy ({trajectory.policy.policy_id!r})")
    if not trajectory.decisions:
        raise InvalidArgument("decisions", "no decisions to learn from")
    version = trajectory.policy.version or min(d.policy.version for d in trajectory.decisions)
    if version <= 0:
        raise InvalidArgument("policy.version", "the policy version that collected it is unknown")
    if version > base_version:
        raise InvalidArgument(
            "policy.version", f"collected by version {version}, newer than the base {base_version}"
        )
    if version < oldest:
        raise FailedPrecondition(
            f"too stale: collected by version {version}, older than {oldest} "
            f"(base {base_version} minus max_policy_staleness {base_version - oldest})"
        )
    trajectory_advantage = trajectory.advantage if trajectory.HasField("advantage") else None
    result = []
    heads = base.heads
    for i, decision in enumerate(trajectory.decisions):
        made_by = decision.policy.policy_id
        if made_by and made_by != policy_id:
            raise InvalidArgument(f"decisions[{i}].policy", f"made by another policy ({made_by!r})")
        name = decision.head
        head = heads.get(name)
        if head is None:
            raise NotFound(f"decisions[{i}]: the policy has no head {name!r}")
        checked = check_recorded_decision(head, decision, lambda i=i: f"decisions[{i}]")
        if decision.HasField("advantage"):
            advantage = decision.advantage
        elif trajectory_advantage is not None:
            advantage = trajectory_advantage
        else:
            raise FailedPrecondition(
                "not scored: neither the trajectory nor its decisions carry an advantage"
            )
        if not math.isfinite(advantage):
            raise InvalidArgument(f"decisions[{i}].advantage", "must be a finite number")
        if checked[4] > 1e-9:  # the log-probability: finite, checked above
            raise InvalidArgument(f"decisions[{i}].log_prob", "a log-probability must be <= 0")
        result.append((name, checked, advantage))
    return result


__all__ = ["PolicyVersion", "TrainerService", "check_policy_id", "initial_weights", "select_trajectories"]
