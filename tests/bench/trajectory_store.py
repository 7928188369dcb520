"""Speed of the trajectory store: ingest over gRPC, filtered search and similarity search.

`measure_ingest(database_url, seconds)` starts an in-process collector (a fresh SQLite directory, or
a fresh schema in the PostgreSQL database the URL names), streams ~2 KB trajectories with 5 steps
from one client task over `IngestTrajectories` for `seconds`, and on PostgreSQL also times a raw
asyncpg COPY of the same rows into a scratch table, so the ratio is taken within one run.

`measure_search(database_url, rows)` loads `rows` trajectories through `TrajectoryStore.ingest`
(batches of 1,000), then times filtered and similarity searches through the store API.

Both also serve the tests as a source of realistic trajectories (`make_trajectory`).
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.event_loop import run_event_loop

AGENTS = ("toolbench-agent", "search-agent", "code-agent", "travel-agent")
TOOLS = ("search_flights", "get_weather", "book_hotel", "read_file", "run_tests", "web_search", "calculator")
CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver", "Hanoi", "Quito")
WORDS = (
    "find cheapest route compare prices summarize forecast report schedule verify result "
    "retry parse table extract total budget hotel flight weather booking confirm list"
).split()


def make_trajectory(i: int, *, rng: random.Random | None = None, **fields: Any) -> tpb.Trajectory:
    """A ~2 KB trajectory with 5 agent steps (tool call, result, response) and 1 LLM interaction."""
    rng = rng or random.Random(i)
    city = CITIES[i % len(CITIES)]
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    t = tpb.Trajectory(
        task=f"Plan a trip to {city}: {words}",
        provider="openai",
        model="gpt-4o-mini",
        max_steps=10,
        agent=tpb.AgentRef(name=AGENTS[i % len(AGENTS)], version=f"1.{i % 3}"),
        job_id=f"job-{i % 10}",
        group_id=f"group-{i // 8}",
        iteration=i % 5,
        query_id=f"q-{i % 100}",
        termination_reason=tpb.TERMINATION_REASON_COMPLETED,
        cost_micro_usd=1000 + i,
    )
    t.start_time.FromSeconds(1_700_000_000 + i)
    t.end_time.FromSeconds(1_700_000_030 + i)
    t.success = i % 2 == 0
    t.reward = (i % 11) / 10.0
    t.final_result = f"Booked the trip to {city}; total {100 + i % 900} USD. {words}"
    t.labels["split"] = "heldout" if i % 5 == 0 else "train"
    interaction = t.llm_interactions.add(provider="openai", model="gpt-4o-mini")
    interaction.input_messages.add(role="system", content="You are a careful travel assistant.")
    interaction.input_messages.add(role="user", content=t.task)
    interaction.response.content = "I will search for flights first."
    interaction.response.usage.input_tokens = 120
    interaction.response.usage.output_tokens = 30
    interaction.tools_available.extend(TOOLS[:4])
    for step_number in range(1, 6):
        tool = TOOLS[(i + step_number) % len(TOOLS)]
        step = t.agent_steps.add(step_number=step_number, state="calling_tool")
        step.timestamp.FromSeconds(1_700_000_000 + i + step_number)
        call = step.tool_calls.add(
            call_id=f"call_{step_number}",
            name=tool,
            arguments_json=f'{{"city": "{city}", "day": {step_number}, "query": "{rng.choice(WORDS)}"}}',
        )
        step.tool_results.add(
            call_id=call.call_id,
            success=True,
            result=f"{tool} returned: " + " ".join(rng.choice(WORDS) for _ in range(14)),
        )
        step.llm_response.content = f"Step {step_number}: " + " ".join(rng.choice(WORDS) for _ in range(10))
        step.llm_response.finish_reason = "tool_calls"
        decision = t.decisions.add(head="next_tool", options=list(TOOLS[:4]), chosen_index=step_number % 4)
        decision.chosen = decision.options[decision.chosen_index]
        decision.log_prob = -1.2
        decision.step_number = step_number
    for name, value in fields.items():
        if name == "labels":
            t.labels.clear()
            t.labels.update(value)
        elif isinstance(value, tpb.AgentRef):
            t.agent.CopyFrom(value)
        else:
            setattr(t, name, value)
    return t


@contextlib.asynccontextmanager
async def _settings_for(database_url: str) -> AsyncIterator[Any]:
    """Settings on a fresh SQLite directory or a fresh PostgreSQL schema (dropped afterwards)."""
    from cohort.platform.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp) / "var", auth_cache_seconds=60.0)
        if not database_url or database_url.startswith("sqlite"):
            yield base.with_overrides(database_url=database_url or "")
            return
        import asyncpg

        raw_url = _raw_pg_url(database_url)
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(raw_url)
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield base.with_overrides(
                database_url=raw_url.replace("postgresql://", "postgresql+asyncpg://", 1),
                database_schema=schema,
            )
        finally:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await connection.close()


def _raw_pg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


async def measure_ingest(database_url: str, seconds: float) -> dict:
    """Trajectories per second through `IngestTrajectories` (and, on PostgreSQL, raw COPY of the rows)."""
    from cohort.services.suite import start_suite

    pool = [make_trajectory(i) for i in range(2048)]
    size = statistics.mean(t.ByteSize() for t in pool)
    async with _settings_for(database_url) as settings:
        suite = await start_suite(settings, ["collector"], ephemeral_ports=True)
        try:
            stub = collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))
            sent = 0
            stop_at = 0.0

            async def requests():
                nonlocal sent
                while time.perf_counter() < stop_at:
                    for _ in range(256):
                        template = pool[sent % len(pool)]
                        item = collector_pb2.IngestTrajectoriesRequest(trajectory=template)
                        item.trajectory.trajectory_id = f"bench-{sent}"
                        sent += 1
                        yield item

            started = time.perf_counter()
            stop_at = started + seconds
            response = await stub.IngestTrajectories(requests(), timeout=seconds + 120)
            elapsed = time.perf_counter() - started
            assert response.stored_count == sent, (response.stored_count, sent, response.failures[:1])
            result: dict[str, Any] = {
                "trajectories_per_second": sent / elapsed,
                "stored": sent,
                "seconds": elapsed,
                "bytes_per_trajectory": size,
            }
            if settings.database_schema:
                copy_rate = await _copy_rate(
                    _raw_pg_url(database_url), settings.database_schema, min(sent, 50_000)
                )
                result["copy_per_second"] = copy_rate
                result["ratio"] = result["trajectories_per_second"] / copy_rate
            else:
                result["copy_per_second"] = None
                result["ratio"] = None
            return result
        finally:
            await suite.stop(0)


async def _copy_rate(raw_url: str, schema: str, count: int) -> float:
    """Rows per second of a raw asyncpg COPY of `count` stored rows into a scratch copy of the table."""
    import asyncpg

    connection = await asyncpg.connect(raw_url, server_settings={"search_path": schema})
    try:
        records = await connection.fetch(f"SELECT * FROM trajectories LIMIT {count}")
        columns = list(records[0].keys())
        rows = [
            tuple(f"copy-{n}" if name == "trajectory_id" else record[name] for name in columns)
            for n, record in enumerate(records)
        ]
        # INCLUDING INDEXES copies every index, the full-text expression index too.
        await connection.execute(
            "CREATE TABLE trajectories_copy (LIKE trajectories INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        started = time.perf_counter()
        await connection.copy_records_to_table("trajectories_copy", records=rows, columns=columns)
        elapsed = time.perf_counter() - started
        return len(rows) / elapsed
    finally:
        await connection.close()


async def measure_search(database_url: str, rows: int) -> dict:
    """p50/p95 in ms of filtered and similarity searches over `rows` stored trajectories."""
    from cohort.platform.storage import open_database
    from cohort.services.collector.store import SearchQuery, TrajectoryFilter, TrajectoryStore, View

    async with _settings_for(database_url) as settings:
        database = await open_database(settings)
        try:
            store = TrajectoryStore(database)
            pool = [make_trajectory(i) for i in range(2000)]
            load_started = time.perf_counter()
            for start in range(0, rows, 1000):
                batch = []
                for n in range(start, min(rows, start + 1000)):
                    t = tpb.Trajectory()
                    t.CopyFrom(pool[n % len(pool)])
                    t.trajectory_id = f"t-{n}"
                    batch.append(t)
                await store.ingest("bench", batch)
            load_seconds = time.perf_counter() - load_started
            # What autovacuum does shortly after a bulk load: planner statistics and, on PostgreSQL,
            # the visibility map that lets the similarity path read ids by index-only scans.
            # (The store itself gathers SQLite's statistics as the table grows.)
            if not database.is_sqlite:
                engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
                async with engine.connect() as connection:
                    await connection.exec_driver_sql("VACUUM ANALYZE")

            rng = random.Random(7)
            filters = [
                lambda: TrajectoryFilter(agent_name=rng.choice(AGENTS)),
                lambda: TrajectoryFilter(job_id=f"job-{rng.randrange(10)}", success=True),
                lambda: TrajectoryFilter(min_reward=0.5, max_reward=0.9, termination_reasons=(1,)),
                lambda: TrajectoryFilter(group_id=f"group-{rng.randrange(rows // 8)}"),
                lambda: TrajectoryFilter(labels=(("split", "heldout"),), agent_version="1.1"),
            ]
            filtered: list[float] = []
            by_kind: dict[int, list[float]] = {}
            for n in range(50):
                query = SearchQuery(filter=filters[n % len(filters)](), view=View.BASIC)
                started = time.perf_counter()
                await store.search("bench", query)
                filtered.append((time.perf_counter() - started) * 1000)
                by_kind.setdefault(n % len(filters), []).append(filtered[-1])

            # The first similarity query reads every embedding once (cold cache); the rest are warm.
            cold_store = TrajectoryStore(database)
            started = time.perf_counter()
            await cold_store.search("bench", SearchQuery(similar_to_text="trip to Paris weather"))
            cold_ms = (time.perf_counter() - started) * 1000
            similar: list[float] = []
            for n in range(50):
                if n % 2:
                    query = SearchQuery(similar_to_text=f"plan a trip to {rng.choice(CITIES)} book hotel")
                else:
                    query = SearchQuery(similar_to_trajectory_id=f"t-{rng.randrange(rows)}")
                started = time.perf_counter()
                await cold_store.search("bench", query)
                similar.append((time.perf_counter() - started) * 1000)
            return {
                "rows": rows,
                "load_seconds": load_seconds,
                "filtered_p50_ms": _percentile(filtered, 50),
                "filtered_p95_ms": _percentile(filtered, 95),
                "filtered_max_ms_by_kind": [round(max(by_kind[k]), 1) for k in sorted(by_kind)],
                "similarity_p50_ms": _percentile(similar, 50),
                "similarity_p95_ms": _percentile(similar, 95),
                "similarity_cold_ms": cold_ms,
            }
        finally:
            await database.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


if __name__ == "__main__":
    import json
    import sys

    url = sys.argv[1] if len(sys.argv) > 1 else ""
    what = sys.argv[2] if len(sys.argv) > 2 else "ingest"
    amount = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    if what == "ingest":
        print(json.dumps(run_event_loop(measure_ingest(url, amount)), indent=2))
    else:
        print(json.dumps(run_event_loop(measure_search(url, int(amount))), indent=2))
