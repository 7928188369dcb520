"""The trajectory store's domain API on SQLite and on PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from bench.trajectory_store import make_trajectory
from sqlalchemy import text

from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.config import Settings
from cohort.platform.errors import AlreadyExists, InvalidArgument, NotFound
from cohort.platform.ids import uuid7
from cohort.platform.storage import open_database
from cohort.services.collector import embedding
from cohort.services.collector.store import (
    ItemStatus,
    SearchQuery,
    TrajectoryFilter,
    TrajectoryStore,
    View,
)

TENANT = "acme"
OTHER = "globex"


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request, tmp_path):
    if request.param == "sqlite":
        db = await open_database(Settings(data_dir=tmp_path / "var"))
        try:
            yield db
        finally:
            await db.close()
        return
    import asyncpg

    url = request.getfixturevalue("postgres_url")
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    raw = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await raw.execute(f'CREATE SCHEMA "{schema}"')
    try:
        db = await open_database(Settings(database_url=url, database_schema=schema))
        try:
            yield db
        finally:
            await db.close()
    finally:
        await raw.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await raw.close()


@pytest.fixture
def store(database):
    return TrajectoryStore(database)


def traj(i: int, **fields) -> tpb.Trajectory:
    t = make_trajectory(i, **fields)
    if "trajectory_id" not in fields:
        t.trajectory_id = f"t-{i}"
    return t


async def ids_of(store, query: SearchQuery, tenant: str = TENANT) -> list[str]:
    hits, _ = await store.search(tenant, query)
    return [hit.trajectory.trajectory_id for hit in hits]


async def test_ingest_stores_and_get_returns_it(store):
    result = await store.ingest(TENANT, [traj(1), traj(2)])
    assert [i.status for i in result.items] == [ItemStatus.STORED, ItemStatus.STORED]
    got = await store.get(TENANT, "t-1")
    assert got.tenant_id == TENANT
    assert got.task == make_trajectory(1).task
    assert got.HasField("create_time")
    assert len(got.agent_steps) == 5
    assert got.labels["split"] == "train"


async def test_ids_are_assigned_time_ordered_and_tenant_is_forced(store):
    t = make_trajectory(3)
    t.tenant_id = "someone-else"
    result = await store.ingest(TENANT, [t, make_trajectory(4)])
    first, second = (item.trajectory_id for item in result.items)
    assert first and second and first != second
    assert uuid.UUID(first).version == 7
    assert uuid7() > first
    assert (await store.get(TENANT, first)).tenant_id == TENANT
    with pytest.raises(NotFound):
        await store.get("someone-else", first)


async def test_duplicate_same_content_is_not_stored_again_and_different_content_fails(store, database):
    assert (await store.ingest(TENANT, [traj(1)])).stored_count == 1
    again = await store.ingest(TENANT, [traj(1)])
    assert again.items[0].status is ItemStatus.DUPLICATE
    changed = traj(1, task="something else entirely")
    result = await store.ingest(TENANT, [changed, traj(2)])
    assert result.items[0].status is ItemStatus.FAILED
    assert isinstance(result.items[0].error, AlreadyExists)
    assert "t-1" in result.items[0].error.message
    assert result.items[1].status is ItemStatus.STORED
    # Nothing was overwritten.
    assert (await store.get(TENANT, "t-1")).task == make_trajectory(1).task
    async with database.engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM trajectories"))).scalar()
    assert count == 2


async def test_repeats_within_one_batch(store):
    result = await store.ingest(TENANT, [traj(1), traj(1), traj(1, task="other")])
    assert [i.status for i in result.items] == [ItemStatus.STORED, ItemStatus.DUPLICATE, ItemStatus.FAILED]
    assert isinstance(result.items[2].error, AlreadyExists)


async def test_same_id_in_two_tenants_is_two_trajectories(store):
    await store.ingest(TENANT, [traj(1)])
    result = await store.ingest(OTHER, [traj(1, task="globex's own")])
    assert result.items[0].status is ItemStatus.STORED
    assert (await store.get(OTHER, "t-1")).task == "globex's own"
    assert (await store.get(TENANT, "t-1")).task == make_trajectory(1).task


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cost_micro_usd": -1}, "trajectory.cost_micro_usd"),
        ({"reward": float("nan")}, "trajectory.reward"),
        ({"reward": float("inf")}, "trajectory.reward"),
        ({"labels": {"": "x"}}, "trajectory.labels"),
        ({"termination_reason": 99}, "trajectory.termination_reason"),
        ({"iteration": -3}, "trajectory.iteration"),
        ({"trajectory_id": "has spaces in it"}, "trajectory.trajectory_id"),
        ({"job_id": "j" * 500}, "trajectory.job_id"),
    ],
)
async def test_a_bad_item_fails_alone_with_its_index(store, change, field):
    bad = traj(2, **change)
    result = await store.ingest(TENANT, [traj(1), bad, traj(3)])
    assert [i.status for i in result.items] == [ItemStatus.STORED, ItemStatus.FAILED, ItemStatus.STORED]
    failure = result.items[1]
    assert failure.index == 1
    assert isinstance(failure.error, InvalidArgument)
    assert failure.error.field == field
    assert {h.trajectory.trajectory_id for h in (await store.search(TENANT, SearchQuery()))[0]} == {
        "t-1",
        "t-3",
    }


async def test_secrets_are_redacted_before_storage(store, database):
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    t = traj(1, task=f"call the API with key {secret} please")
    t.agent_steps[0].tool_results[0].result = f"curl -H 'Authorization: Bearer {secret}' https://x"
    t.llm_interactions[0].input_messages[1].content = f"my key is {secret}"
    await store.ingest(TENANT, [t])
    got = await store.get(TENANT, "t-1")
    assert secret not in str(got)
    assert "call the API with key" in got.task
    async with database.engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT document, search_text FROM trajectories WHERE trajectory_id = 't-1'")
            )
        ).one()
    assert secret.encode() not in bytes(row[0])
    assert secret not in row[1]
    assert await ids_of(store, SearchQuery(text_query=secret[8:])) == []


async def test_usage_and_cost_are_filled_when_absent(store):
    t = traj(1, cost_micro_usd=0)
    t.ClearField("total_usage")
    await store.ingest(TENANT, [t])
    got = await store.get(TENANT, "t-1")
    assert got.HasField("total_usage")
    assert got.total_usage.input_tokens == 120
    given = traj(2, cost_micro_usd=777)
    await store.ingest(TENANT, [given])
    assert (await store.get(TENANT, "t-2")).cost_micro_usd == 777


async def test_get_missing_and_other_tenants_are_the_same_not_found(store):
    await store.ingest(TENANT, [traj(1)])
    with pytest.raises(NotFound) as missing:
        await store.get(TENANT, "nope")
    with pytest.raises(NotFound) as foreign:
        await store.get(OTHER, "t-1")
    assert str(missing.value).replace("nope", "X") == str(foreign.value).replace("t-1", "X")


async def test_each_filter(store, database):
    items = [
        traj(0, agent=tpb.AgentRef(name="alpha", version="1"), job_id="j1", group_id="g1", iteration=1),
        traj(1, agent=tpb.AgentRef(name="alpha", version="2"), job_id="j1", group_id="g2", iteration=2),
        traj(2, agent=tpb.AgentRef(name="beta", version="1"), job_id="j2", group_id="g3", iteration=1),
        traj(3, agent=tpb.AgentRef(name="beta", version="1"), job_id="j2", group_id="g3", iteration=2),
    ]
    items[0].success, items[1].success, items[2].success = True, False, True
    items[3].ClearField("success")
    items[0].reward, items[1].reward, items[2].reward = 0.1, 0.5, 0.9
    items[3].ClearField("reward")
    items[2].termination_reason = tpb.TERMINATION_REASON_TIMEOUT
    items[3].termination_reason = tpb.TERMINATION_REASON_ERROR
    items[0].labels.clear()
    items[0].labels.update({"split": "heldout", "env": "prod"})
    items[1].labels.clear()
    items[1].labels.update({"split": "heldout", "env": "dev"})
    await store.ingest(TENANT, items[:2])
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await store.ingest(TENANT, items[2:])
    await store.ingest(OTHER, [traj(9, agent=tpb.AgentRef(name="alpha", version="1"))])

    async def match(**kwargs) -> set[str]:
        return set(await ids_of(store, SearchQuery(filter=TrajectoryFilter(**kwargs))))

    assert await match() == {"t-0", "t-1", "t-2", "t-3"}
    assert await match(agent_name="alpha") == {"t-0", "t-1"}
    assert await match(agent_name="beta", agent_version="1") == {"t-2", "t-3"}
    assert await match(agent_version="2") == {"t-1"}
    assert await match(job_id="j2") == {"t-2", "t-3"}
    assert await match(group_id="g2") == {"t-1"}
    assert await match(iteration=1) == {"t-0", "t-2"}
    assert await match(success=True) == {"t-0", "t-2"}
    assert await match(success=False) == {"t-1"}
    assert await match(
        termination_reasons=(tpb.TERMINATION_REASON_TIMEOUT, tpb.TERMINATION_REASON_ERROR)
    ) == {
        "t-2",
        "t-3",
    }
    assert await match(min_reward=0.5) == {"t-1", "t-2"}
    assert await match(max_reward=0.5) == {"t-0", "t-1"}
    assert await match(min_reward=0.2, max_reward=0.6) == {"t-1"}
    assert await match(created_after=middle) == {"t-2", "t-3"}
    assert await match(created_before=middle) == {"t-0", "t-1"}
    assert await match(created_after=middle + timedelta(days=1)) == set()
    assert await match(labels=(("split", "heldout"),)) == {"t-0", "t-1"}
    assert await match(labels=(("split", "heldout"), ("env", "dev"))) == {"t-1"}
    assert await match(labels=(("env", "nowhere"),)) == set()

    # Superseded rows are hidden unless asked for.
    async with database.engine.begin() as connection:
        await connection.execute(
            text("UPDATE trajectories SET superseded = true WHERE trajectory_id = 't-3'")
        )
    assert await match(job_id="j2") == {"t-2"}
    assert await match(job_id="j2", include_superseded=True) == {"t-2", "t-3"}
    assert (await store.get(TENANT, "t-3")).superseded is True


async def test_bad_filters_are_invalid_arguments(store):
    for f, field in (
        (TrajectoryFilter(min_reward=2.0, max_reward=1.0), "filter.min_reward"),
        (TrajectoryFilter(termination_reasons=(0,)), "filter.termination_reasons[0]"),
        (TrajectoryFilter(min_reward=float("nan")), "filter.min_reward"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            await store.search(TENANT, SearchQuery(filter=f))
        assert caught.value.field == field
    for size in (-1, 1001):
        with pytest.raises(InvalidArgument) as caught:
            await store.search(TENANT, SearchQuery(page_size=size))
        assert caught.value.field == "page_size"


async def test_newest_first_and_paging_with_tokens(store):
    for start in range(0, 12, 4):
        await store.ingest(TENANT, [traj(i) for i in range(start, start + 4)])
        await asyncio.sleep(0.002)
    await store.ingest(OTHER, [traj(100)])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        hits, token = await store.search(TENANT, SearchQuery(page_size=5, page_token=token))
        seen.extend(h.trajectory.trajectory_id for h in hits)
        pages += 1
        if not token:
            break
    assert pages == 3
    assert len(seen) == 12 and len(set(seen)) == 12
    assert set(seen[:4]) == {"t-8", "t-9", "t-10", "t-11"}  # the newest batch first
    times = [(await store.get(TENANT, tid)).create_time.ToDatetime() for tid in seen]
    assert times == sorted(times, reverse=True)
    # A token is bound to its query.
    _, token = await store.search(TENANT, SearchQuery(page_size=5))
    with pytest.raises(InvalidArgument) as caught:
        await store.search(
            TENANT, SearchQuery(page_size=5, page_token=token, filter=TrajectoryFilter(job_id="x"))
        )
    assert caught.value.field == "page_token"
    for bad in ("garbage!", "eyJxIjoxfQ"):
        with pytest.raises(InvalidArgument) as caught:
            await store.search(TENANT, SearchQuery(page_token=bad))
        assert caught.value.field == "page_token"


async def test_views(store):
    await store.ingest(TENANT, [traj(1)])
    basic, _ = await store.search(TENANT, SearchQuery(view=View.BASIC))
    full, _ = await store.search(TENANT, SearchQuery(view=View.FULL))
    b, f = basic[0].trajectory, full[0].trajectory
    assert len(b.llm_interactions) == 0 and len(b.agent_steps) == 0 and len(b.decisions) == 0
    assert b.task == f.task and b.reward == f.reward and b.labels == f.labels
    assert len(f.agent_steps) == 5 and len(f.decisions) == 5 and len(f.llm_interactions) == 1


async def test_full_text_search(store):
    await store.ingest(
        TENANT,
        [
            traj(1, task="Deploy the kubernetes cluster on staging"),
            traj(2, task="Write a haiku about autumn leaves"),
            traj(3, task="Summarize the quarterly report"),
        ],
    )
    t4 = traj(4, task="Unrelated task")
    t4.agent_steps[2].tool_results[0].result = "The kubernetes pods restarted twice"
    await store.ingest(TENANT, [t4])
    await store.ingest(OTHER, [traj(5, task="kubernetes for globex")])
    found = await ids_of(store, SearchQuery(text_query="kubernetes"))
    assert set(found) == {"t-1", "t-4"}
    hits, _ = await store.search(TENANT, SearchQuery(text_query="kubernetes"))
    assert all(h.score > 0 for h in hits)
    assert await ids_of(store, SearchQuery(text_query="haiku autumn")) == ["t-2"]
    assert await ids_of(store, SearchQuery(text_query="haiku kubernetes")) == []  # every word must match
    assert await ids_of(store, SearchQuery(text_query="deploying clusters")) == ["t-1"]  # stemmed
    assert await ids_of(store, SearchQuery(text_query='quarterly* "report (')) == ["t-3"]  # no syntax errors
    assert await ids_of(
        store, SearchQuery(text_query="kubernetes", filter=TrajectoryFilter(job_id=make_trajectory(4).job_id))
    ) == ["t-4"]
    with pytest.raises(InvalidArgument) as caught:
        await store.search(TENANT, SearchQuery(text_query="!!! ???"))
    assert caught.value.field == "text_query"


async def test_full_text_paging(store):
    await store.ingest(TENANT, [traj(i, task=f"needle number {i} " + "hay " * i) for i in range(7)])
    seen: list[str] = []
    token = ""
    while True:
        hits, token = await store.search(
            TENANT, SearchQuery(text_query="needle", page_size=3, page_token=token)
        )
        seen.extend(h.trajectory.trajectory_id for h in hits)
        if not token:
            break
    assert sorted(seen) == sorted(f"t-{i}" for i in range(7))


async def test_similarity_ranks_a_near_copy_first(store):
    items = [
        traj(1, task="Find the cheapest flight from Paris to Tokyo next week", final_result="Booked JL46"),
        traj(2, task="Compute the derivative of a polynomial", final_result="3x^2 + 2x"),
        traj(3, task="Write unit tests for the parser module", final_result="12 tests pass"),
        traj(4, task="Find the cheapest flight from Paris to Tokyo next month", final_result="Booked JL46"),
    ]
    await store.ingest(TENANT, items)
    await store.ingest(OTHER, [traj(9, task="Find the cheapest flight from Paris to Tokyo next week")])
    hits, _ = await store.search(TENANT, SearchQuery(similar_to_trajectory_id="t-1"))
    ids = [h.trajectory.trajectory_id for h in hits]
    assert ids[0] == "t-4"
    assert "t-1" not in ids and "t-9" not in ids
    assert hits[0].score > 0.6 > hits[0].score - 0.3 > hits[1].score
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    text_hits, _ = await store.search(TENANT, SearchQuery(similar_to_text="unit tests for a parser"))
    assert text_hits[0].trajectory.trajectory_id == "t-3"
    # Combined with a filter and with full text.
    assert (
        await ids_of(
            store, SearchQuery(similar_to_text="flight Paris", filter=TrajectoryFilter(max_reward=-1))
        )
        == []
    )
    assert (await ids_of(store, SearchQuery(similar_to_text="cheapest flight", text_query="polynomial"))) == [
        "t-2"
    ]
    with pytest.raises(NotFound):
        await store.search(TENANT, SearchQuery(similar_to_trajectory_id="t-9x"))
    with pytest.raises(NotFound):
        await store.search(OTHER, SearchQuery(similar_to_trajectory_id="t-1"))


async def test_similarity_paging_and_a_cold_cache(store, database):
    await store.ingest(TENANT, [traj(i) for i in range(25)])
    cold = TrajectoryStore(database)  # another replica: nothing cached
    seen: list[str] = []
    scores: list[float] = []
    token = ""
    while True:
        hits, token = await cold.search(
            TENANT, SearchQuery(similar_to_text="plan a trip to Paris", page_size=10, page_token=token)
        )
        seen.extend(h.trajectory.trajectory_id for h in hits)
        scores.extend(h.score for h in hits)
        if not token:
            break
    assert sorted(seen) == sorted(f"t-{i}" for i in range(25))
    assert scores == sorted(scores, reverse=True)


async def test_stored_embedding_is_the_hashing_embedders(store, database):
    await store.ingest(TENANT, [traj(1)])
    async with database.engine.connect() as connection:
        blob = (await connection.execute(text("SELECT embedding FROM trajectories"))).scalar()
    vector = embedding.from_bytes(bytes(blob))
    assert vector.shape == (embedding.DIMENSIONS,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


async def test_export_streams_in_keyset_batches_oldest_first(store):
    for start in range(0, 30, 10):
        await store.ingest(TENANT, [traj(i) for i in range(start, start + 10)])
    await store.ingest(OTHER, [traj(100)])
    batches = [batch async for batch in store.export_batches(TENANT, TrajectoryFilter(), batch_size=7)]
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    ids = [t.trajectory_id for b in batches for t in b]
    assert sorted(ids) == sorted(f"t-{i}" for i in range(30))
    assert set(ids[:10]) == {f"t-{i}" for i in range(10)}
    assert all(len(t.agent_steps) == 5 for b in batches for t in b)
    limited = [t.trajectory_id async for t in store.export(TENANT, TrajectoryFilter(), limit=12)]
    assert limited == ids[:12]
    heldout = [t async for t in store.export(TENANT, TrajectoryFilter(labels=(("split", "heldout"),)))]
    assert {t.trajectory_id for t in heldout} == {f"t-{i}" for i in range(0, 30, 5)}
    assert [t async for t in store.export("nobody", TrajectoryFilter())] == []
