"""Registered reward functions: each tenant's rows of `reward_functions` (migration 0008).

Every method takes the tenant explicitly and never sees another tenant's registrations. A
registration never changes once made: the same name with another definition is `AlreadyExists`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.platform.errors import AlreadyExists
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database
from cohort.platform.storage.schema import RewardFunctionRow

ResponseT = TypeVar("ResponseT", bound=Message)


class FunctionKind(Enum):
    BUILTIN = "builtin"
    PYTHON = "python"
    REMOTE = "remote"


@dataclass(frozen=True)
class RewardFunction:
    name: str
    kind: FunctionKind
    entry_point: str = ""
    address: str = ""
    description: str = ""
    create_time: datetime | None = None

    def same_definition(self, other: RewardFunction) -> bool:
        return (self.kind, self.entry_point, self.address, self.description) == (
            other.kind,
            other.entry_point,
            other.address,
            other.description,
        )


def _from_row(row: RewardFunctionRow) -> RewardFunction:
    return RewardFunction(
        name=row.name,
        kind=FunctionKind(row.kind),
        entry_point=row.entry_point,
        address=row.address,
        description=row.description,
        create_time=row.create_time,
    )


class RewardFunctionStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def register(
        self,
        scope: str,
        request: Message,
        response_type: type[ResponseT],
        respond: Callable[[RewardFunction], ResponseT],
        tenant_id: str,
        function: RewardFunction,
    ) -> ResponseT:
        """Stores `function` unless its name is taken, answered once per request id; `respond` makes the
        answer from the stored registration. A name registered with the same definition is that
        registration; with another one, `AlreadyExists`."""

        async def store(session: AsyncSession) -> ResponseT:
            row = await session.get(RewardFunctionRow, (tenant_id, function.name))
            if row is None:
                row = RewardFunctionRow(
                    tenant_id=tenant_id,
                    name=function.name,
                    kind=function.kind.value,
                    entry_point=function.entry_point,
                    address=function.address,
                    description=function.description,
                    create_time=datetime.now(UTC),
                )
                session.add(row)
            elif not _from_row(row).same_definition(function):
                raise AlreadyExists(
                    f"reward function {function.name!r} is already registered with another definition"
                )
            return respond(_from_row(row))

        try:
            return await idempotency.run_once(self._database, scope, request, response_type, store)
        except IntegrityError:
            # Registered at the same moment by another request: its definition decides.
            async with self._database.sessions() as session:
                return await store(session)

    async def find(self, tenant_id: str, names: Sequence[str]) -> list[RewardFunction]:
        """The tenant's registrations among `names` (one query)."""
        async with self._database.sessions() as session:
            rows = await session.scalars(
                select(RewardFunctionRow).where(
                    RewardFunctionRow.tenant_id == tenant_id, RewardFunctionRow.name.in_(names)
                )
            )
            return [_from_row(row) for row in rows]

    async def page(self, tenant_id: str, after_name: str | None, limit: int) -> list[RewardFunction]:
        """Up to `limit` of the tenant's registrations by name, after `after_name` (None: from the first)."""
        query = select(RewardFunctionRow).where(RewardFunctionRow.tenant_id == tenant_id)
        if after_name is not None:
            query = query.where(RewardFunctionRow.name > after_name)
        query = query.order_by(RewardFunctionRow.name).limit(limit)
        async with self._database.sessions() as session:
            return [_from_row(row) for row in await session.scalars(query)]
