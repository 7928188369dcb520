"""Idempotent mutating RPCs: a repeated `request_id` returns the first answer.

The first response to each (tenant, scope, request id) is stored in the same transaction as the work
it answers, so either both are committed or neither is. A request id reused with a different request
is an error rather than a silent replay of something the caller did not ask for.

    response = await run_once(database, "cohort.api.budget.v1.BudgetService.Reserve", request,
                              ReserveResponse, lambda session: reserve(session, ...))

Work that cannot live in one transaction (it calls other services, computes for long, or writes
files) must be safe to redo. It asks `find_answer` first, so a repeat skips it, does its work, then
commits its answer with `run_once` (with whatever rows go with it): a call that answered meanwhile
still wins, and the work done here is simply not used.

`work` gets the transaction's session and hands it to its service's store, which runs the statements.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cohort.platform.context import current_tenant
from cohort.platform.errors import CohortError, InvalidArgument
from cohort.platform.storage.engine import Database, write_transaction
from cohort.platform.storage.schema import IdempotencyRecord

ResponseT = TypeVar("ResponseT", bound=Message)

MAX_REQUEST_ID_LENGTH = 200


def request_fingerprint(request: Message) -> str:
    """SHA-256 of the request without its `request_id`, deterministic serialization."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _request_id(request: Message) -> str:
    request_id = getattr(request, "request_id", "")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    return request_id


async def find(
    session: AsyncSession, scope: str, request: Message, response_type: type[ResponseT]
) -> ResponseT | None:
    """The stored first answer to `request`, or None; `InvalidArgument` if its id was used for another."""
    request_id = _request_id(request)
    if not request_id:
        return None
    row = await session.get(IdempotencyRecord, (current_tenant(), scope, request_id))
    if row is None:
        return None
    if row.request_sha256 != request_fingerprint(request):
        raise InvalidArgument(
            "request_id",
            f"{request_id!r} was already used for a different {scope.rsplit('.', 1)[-1]} request",
        )
    return response_type.FromString(row.response)


def remember(session: AsyncSession, scope: str, request: Message, response: Message) -> None:
    """Adds the answer to `request` to `session`'s transaction (nothing when it has no request id)."""
    request_id = _request_id(request)
    if request_id:
        session.add(
            IdempotencyRecord(
                tenant_id=current_tenant(),
                scope=scope,
                request_id=request_id,
                request_sha256=request_fingerprint(request),
                response=response.SerializeToString(deterministic=True),
            )
        )


async def find_answer(
    database: Database, scope: str, request: Message, response_type: type[ResponseT]
) -> ResponseT | None:
    """`find` in a session of its own."""
    async with database.sessions() as session:
        return await find(session, scope, request, response_type)


async def run_once(
    database: Database,
    scope: str,
    request: Message,
    response_type: type[ResponseT],
    work: Callable[[AsyncSession], Awaitable[ResponseT]],
    *,
    conflict: CohortError | None = None,
) -> ResponseT:
    """Runs `work` in a write transaction and stores its answer, unless `request` was answered before.

    Two concurrent first calls with one id: one commits, the other's insert conflicts and it returns
    the committed answer (its own work is rolled back with its transaction).

    `conflict`: what a unique-key conflict that is not such a repeat means to the caller (a concurrent
    transaction wrote the same key first); it is raised in place of the database's error.
    """
    try:
        async with write_transaction(database.sessions) as session:
            previous = await find(session, scope, request, response_type)
            if previous is not None:
                return previous
            response = await work(session)
            remember(session, scope, request, response)
        return response
    except IntegrityError as error:
        if _request_id(request):
            previous = await find_answer(database, scope, request, response_type)
            if previous is not None:
                return previous
        if conflict is not None:
            raise conflict from error
        raise
