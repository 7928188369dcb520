"""`cohort.platform.storage.idempotency.run_once`: the first answer per request id, and unique-key
conflicts."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from cohort.api.trainer.v1 import trainer_pb2
from cohort.platform.context import Identity, current_identity
from cohort.platform.errors import AlreadyExists, InvalidArgument
from cohort.platform.storage import idempotency, open_database
from cohort.platform.storage.schema import Tenant

SCOPE = "test.Create"


@pytest.fixture
async def database(tmp_path):
    current_identity.set(Identity(tenant_id="default", key_id="test"))
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'cohort.db'}")
    yield db
    await db.close()


def insert_tenant(tenant_id: str, calls: list[str]):
    async def work(session) -> trainer_pb2.CreatePolicyResponse:
        calls.append(tenant_id)
        session.add(Tenant(id=tenant_id, display_name=tenant_id))
        await session.flush()
        return trainer_pb2.CreatePolicyResponse(policy=trainer_pb2.Policy(policy_id=tenant_id))

    return work


async def test_a_repeated_request_id_gets_the_first_answer_without_redoing_the_work(database):
    calls: list[str] = []
    request = trainer_pb2.CreatePolicyRequest(request_id="r1", display_name="a")
    first = await idempotency.run_once(
        database, SCOPE, request, trainer_pb2.CreatePolicyResponse, insert_tenant("t1", calls)
    )
    again = await idempotency.run_once(
        database, SCOPE, request, trainer_pb2.CreatePolicyResponse, insert_tenant("t2", calls)
    )
    assert again == first and first.policy.policy_id == "t1"
    assert calls == ["t1"]

    other = trainer_pb2.CreatePolicyRequest(request_id="r1", display_name="b")
    with pytest.raises(InvalidArgument) as raised:
        await idempotency.run_once(
            database, SCOPE, other, trainer_pb2.CreatePolicyResponse, insert_tenant("t3", calls)
        )
    assert raised.value.field == "request_id"


async def test_a_conflict_no_earlier_answer_explains_is_raised_as_the_callers_error(database):
    calls: list[str] = []
    request = trainer_pb2.CreatePolicyRequest(display_name="no request id")
    await idempotency.run_once(
        database, SCOPE, request, trainer_pb2.CreatePolicyResponse, insert_tenant("t1", calls)
    )
    taken = AlreadyExists("tenant 't1' already exists")
    with pytest.raises(AlreadyExists) as raised:
        await idempotency.run_once(
            database,
            SCOPE,
            request,
            trainer_pb2.CreatePolicyResponse,
            insert_tenant("t1", calls),
            conflict=taken,
        )
    assert raised.value is taken and isinstance(raised.value.__cause__, IntegrityError)

    with pytest.raises(IntegrityError):  # no `conflict`: the database's error, as before
        await idempotency.run_once(
            database, SCOPE, request, trainer_pb2.CreatePolicyResponse, insert_tenant("t1", calls)
        )
