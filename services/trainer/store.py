"""The policy store: policies and their immutable versions in the database.

Every method takes the tenant explicitly and never sees another tenant's rows (another tenant's
policy is `NotFound`, like a missing one). Weights are stored as raw float64 little-endian bytes,
the heads' vectors one after another in the policy's head order; the Adam state after the update
that produced a version is stored beside it as an `OptimizerState` protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform import paging
from cohort.platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from cohort.platform.storage.engine import Database
from cohort.platform.storage.schema import PolicyRow, PolicyVersionRow, utcnow
from cohort.platform.timestamps import to_timestamp
from cohort.policy import HeadSpec, PolicySnapshot


@dataclass(frozen=True)
class PolicyInfo:
    """A policy's identity and heads, and its latest version when read."""

    tenant_id: str
    policy_id: str
    display_name: str
    heads: dict[str, HeadSpec]
    latest_version: int
    create_time: datetime


@dataclass(frozen=True)
class PolicyVersion:
    """One immutable version: the snapshot (heads + weights) and how it came to be."""

    info: PolicyInfo
    snapshot: PolicySnapshot
    parent_version: int
    create_time: datetime
    optimizer_state: trainer_pb2.OptimizerState | None
    """The Adam state after the update that made this version; None for version 1."""

    def to_proto(self, include_parameters: bool = False) -> trainer_pb2.Policy:
        policy = self.snapshot.to_proto(include_parameters)
        policy.tenant_id = self.info.tenant_id
        policy.display_name = self.info.display_name
        policy.parent_version = self.parent_version
        policy.latest_version = self.info.latest_version
        policy.create_time.CopyFrom(to_timestamp(self.create_time))
        return policy


def encode_heads(heads: dict[str, HeadSpec]) -> bytes:
    return trainer_pb2.Policy(heads=[head.to_proto() for head in heads.values()]).SerializeToString()


def decode_heads(blob: bytes) -> dict[str, HeadSpec]:
    return {
        message.name: HeadSpec(
            name=message.name,
            options=tuple(message.options),
            feature_buckets=message.feature_buckets,
            temperature=message.temperature,
            description=message.description,
        )
        for message in trainer_pb2.Policy.FromString(blob).heads
    }


def encode_weights(heads: dict[str, HeadSpec], weights: dict[str, np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(weights[name], dtype="<f8").tobytes() for name in heads)


def decode_weights(heads: dict[str, HeadSpec], blob: bytes) -> dict[str, np.ndarray]:
    flat = np.frombuffer(blob, dtype="<f8")
    weights, offset = {}, 0
    for name, head in heads.items():
        weights[name] = flat[offset : offset + head.feature_buckets].astype(np.float64)
        offset += head.feature_buckets
    if offset != flat.size:
        raise ValueError("stored parameters do not match the policy's heads")
    return weights


def _info(row: PolicyRow) -> PolicyInfo:
    return PolicyInfo(
        tenant_id=row.tenant_id,
        policy_id=row.policy_id,
        display_name=row.display_name,
        heads=decode_heads(row.heads),
        latest_version=row.latest_version,
        create_time=row.create_time,
    )


def _version(info: PolicyInfo, row: PolicyVersionRow) -> PolicyVersion:
    snapshot = PolicySnapshot(
        policy_id=info.policy_id,
        version=row.version,
        heads=info.heads,
        weights=decode_weights(info.heads, row.parameters),
    )
    return PolicyVersion(
        info=info,
        snapshot=snapshot,
        parent_version=row.parent_version,
        create_time=row.create_time,
        optimizer_state=(
            None
            if row.optimizer_state is None
            else trainer_pb2.OptimizerState.FromString(row.optimizer_state)
        ),
    )


class PolicyStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def insert_policy(
        self,
        session: AsyncSession,
        tenant_id: str,
        policy_id: str,
        display_name: str,
        heads: dict[str, HeadSpec],
        weights: dict[str, np.ndarray],
    ) -> PolicyVersion:
        """Adds a policy at version 1 to `session`'s transaction; `AlreadyExists` when the id is taken."""
        if await session.get(PolicyRow, (tenant_id, policy_id)) is not None:
            raise AlreadyExists(f"policy {policy_id!r} already exists")
        now = utcnow()
        snapshot = PolicySnapshot(policy_id=policy_id, version=1, heads=heads, weights=weights)
        session.add(
            PolicyRow(
                tenant_id=tenant_id,
                policy_id=policy_id,
                display_name=display_name,
                heads=encode_heads(heads),
                latest_version=1,
                create_time=now,
                update_time=now,
            )
        )
        # Flushed now so a concurrent create of the same id fails here, inside this transaction.
        await session.flush()
        session.add(
            PolicyVersionRow(
                tenant_id=tenant_id,
                policy_id=policy_id,
                version=1,
                parent_version=0,
                parameters=encode_weights(heads, snapshot.weights),
                parameters_sha256=snapshot.parameters_sha256,
                optimizer_state=None,
                create_time=now,
            )
        )
        info = PolicyInfo(tenant_id, policy_id, display_name, heads, 1, now)
        return PolicyVersion(info, snapshot, parent_version=0, create_time=now, optimizer_state=None)

    async def insert_version(
        self,
        session: AsyncSession,
        base: PolicyVersion,
        weights: dict[str, np.ndarray],
        optimizer_state: trainer_pb2.OptimizerState,
    ) -> PolicyVersion:
        """Adds version `base + 1` to `session`'s transaction, if `base` is still the latest version.

        The conditional UPDATE is the optimistic-concurrency check: of two updates from the same base,
        one moves `latest_version` and the other matches no row and fails with "stale base version".
        """
        info = base.info
        version = base.snapshot.version + 1
        now = utcnow()
        moved = await session.execute(
            update(PolicyRow)
            .where(
                PolicyRow.tenant_id == info.tenant_id,
                PolicyRow.policy_id == info.policy_id,
                PolicyRow.latest_version == base.snapshot.version,
            )
            .values(latest_version=version, update_time=now)
        )
        if moved.rowcount != 1:
            raise FailedPrecondition(
                f"stale base version: version {base.snapshot.version} of policy {info.policy_id!r} "
                "is no longer the latest",
                reason="STALE_BASE_VERSION",
            )
        snapshot = PolicySnapshot(
            policy_id=info.policy_id, version=version, heads=info.heads, weights=weights
        )
        session.add(
            PolicyVersionRow(
                tenant_id=info.tenant_id,
                policy_id=info.policy_id,
                version=version,
                parent_version=base.snapshot.version,
                parameters=encode_weights(info.heads, snapshot.weights),
                parameters_sha256=snapshot.parameters_sha256,
                optimizer_state=optimizer_state.SerializeToString(),
                create_time=now,
            )
        )
        new_info = PolicyInfo(
            info.tenant_id, info.policy_id, info.display_name, info.heads, version, info.create_time
        )
        return PolicyVersion(new_info, snapshot, base.snapshot.version, now, optimizer_state)

    async def latest_version(self, tenant_id: str, policy_id: str) -> int:
        async with self.database.sessions() as session:
            latest = await session.scalar(
                select(PolicyRow.latest_version).where(
                    PolicyRow.tenant_id == tenant_id, PolicyRow.policy_id == policy_id
                )
            )
        if latest is None:
            raise NotFound(f"policy {policy_id!r} not found")
        return int(latest)

    async def get(self, tenant_id: str, policy_id: str, version: int = 0) -> PolicyVersion:
        """A version of a policy (0: the latest); `NotFound` naming the policy or the version."""
        async with self.database.sessions() as session:
            row = await session.get(PolicyRow, (tenant_id, policy_id))
            if row is None:
                raise NotFound(f"policy {policy_id!r} not found")
            info = _info(row)
            wanted = version or info.latest_version
            version_row = await session.get(PolicyVersionRow, (tenant_id, policy_id, wanted))
        if version_row is None:
            raise NotFound(
                f"version {wanted} of policy {policy_id!r} not found (the latest is {info.latest_version})"
            )
        return _version(info, version_row)

    async def list(
        self, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[list[trainer_pb2.Policy], str]:
        """The tenant's policies at their latest version (no parameters), newest first, and the next
        page's token ("" on the last page)."""
        page_size = paging.check_page_size(page_size)
        scope = {"list": "policies", "tenant": tenant_id}
        position = paging.decode_page_token(page_token, scope)
        query = (
            select(
                PolicyRow,
                PolicyVersionRow.parent_version,
                PolicyVersionRow.parameters_sha256,
                PolicyVersionRow.create_time,
            )
            .join(
                PolicyVersionRow,
                and_(
                    PolicyVersionRow.tenant_id == PolicyRow.tenant_id,
                    PolicyVersionRow.policy_id == PolicyRow.policy_id,
                    PolicyVersionRow.version == PolicyRow.latest_version,
                ),
            )
            .where(PolicyRow.tenant_id == tenant_id)
            .order_by(PolicyRow.create_time.desc(), PolicyRow.policy_id.desc())
            .limit(page_size + 1)
        )
        if position is not None:
            try:
                after_time = datetime.fromisoformat(str(position[0]))
                after_id = str(position[1])
            except (ValueError, IndexError) as error:
                raise InvalidArgument("page_token", "is not a token returned by a previous call") from error
            query = query.where(
                or_(
                    PolicyRow.create_time < after_time,
                    and_(PolicyRow.create_time == after_time, PolicyRow.policy_id < after_id),
                )
            )
        async with self.database.sessions() as session:
            rows = (await session.execute(query)).all()
        policies = []
        for row, parent_version, sha256, version_time in rows[:page_size]:
            info = _info(row)
            policy = trainer_pb2.Policy(
                policy_id=info.policy_id,
                tenant_id=info.tenant_id,
                display_name=info.display_name,
                version=info.latest_version,
                parent_version=parent_version,
                heads=[head.to_proto() for head in info.heads.values()],
                parameters_sha256=sha256,
                latest_version=info.latest_version,
            )
            policy.create_time.CopyFrom(to_timestamp(version_time))
            policies.append(policy)
        next_token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1][0]
            next_token = paging.encode_page_token(scope, [last.create_time.isoformat(), last.policy_id])
        return policies, next_token
