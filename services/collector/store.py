"""The trajectory store: batched idempotent ingest, get, filtered/full-text/similarity search, export.

Every method takes the tenant explicitly (the servicer passes the caller's, from `require_identity()`)
and never sees another tenant's rows: another tenant's trajectory is `NotFound`, exactly like a
missing one.

Ingest works a batch at a time. Everything CPU-heavy for a batch (validation, redaction, usage and
cost, serialization, SHA-256, search text, embeddings) runs in one worker-thread call; the batch is
then written in ONE transaction with multi-row statements:

- PostgreSQL: `INSERT ... SELECT * FROM unnest($1::text[], ...) ON CONFLICT DO NOTHING RETURNING`
  on the raw asyncpg connection (arrays travel in asyncpg's binary format, so this runs close to
  COPY speed, and unlike COPY it is safe against a concurrent ingest of the same id);
- SQLite: under the write lock (`BEGIN IMMEDIATE`), one SELECT of the ids already stored, then
  `executemany` of the new rows, their FTS5 rows and their labels.

Idempotency is by (tenant, id) plus a SHA-256 of the redacted content without its output-only
fields: the same id with the same content is a duplicate (not stored again), the same id with other
content fails alone with `ALREADY_EXISTS`; ingest never overwrites what is stored.

Search (the query, its page tokens and the similarity ranking are `search`'s): filters become
conditions on the indexed columns of `trajectories` (labels: one `EXISTS` on `trajectory_labels` per
label); full text is SQLite FTS5 (`trajectories_fts`, porter stemming, BM25) or PostgreSQL
`to_tsvector('english', search_text)` with its GIN index (`websearch_to_tsquery`, `ts_rank`), every
word of the query matching.

Scores are the one thing written later: `record_scores` sets a trajectory's reward, components and
advantages in its stored document and its indexed `reward` column together, in one transaction per
batch. The content hash is left as ingested, so re-sending the trajectory as first sent is still a
duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import (
    CTE,
    ColumnElement,
    Double,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    column,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cohort.api.collector.v1 import collector_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.context import current_tenant
from cohort.platform.errors import AlreadyExists, CohortError, InvalidArgument, NotFound
from cohort.platform.ids import uuid7
from cohort.platform.paging import DEFAULT_PAGE_SIZE, check_page_size
from cohort.platform.rpc.interceptors import status_of
from cohort.platform.storage import idempotency
from cohort.platform.storage.engine import Database, write_transaction
from cohort.platform.storage.schema import TrajectoryLabelRow, TrajectoryRow
from cohort.sdk.trajectories import ATTEMPT_LABEL
from cohort.sdk.trajectories.redaction import Redactor
from cohort.sdk.trajectories.usage import PriceTable, fill_usage_and_cost
from cohort.services.collector import embedding
from cohort.services.collector.search import (
    EmbeddingCache,
    SearchQuery,
    TrajectoryFilter,
    View,
    decode_page_token,
    encode_page_token,
    rank_by_similarity,
    ranked_key,
    time_key,
    validate_filter,
)

Trajectory = trajectory_pb2.Trajectory
T = TrajectoryRow.__table__
L = TrajectoryLabelRow.__table__
FTS = table("trajectories_fts", column("search_text"), column("tenant_id"), column("trajectory_id"))
_FTS_NAME = literal_column("trajectories_fts")
_TSCONFIG = literal_column("'english'::regconfig")

EXPORT_BATCH = 256
SUPERSEDE_SCOPE = "cohort.api.collector.v1.CollectorService.SupersedeTrajectories"
RECORD_SCORES_SCOPE = "cohort.api.collector.v1.CollectorService.RecordScores"
MAX_SCORES = 10_000
"""Scores one `RecordScores` call may carry: bounds the documents one transaction rewrites."""
_SCORE_READ_CHUNK = 500
SEARCH_TEXT_LIMIT = 8000
"""Characters of a trajectory that full-text search indexes (task and final result come first)."""

SQLITE_FIRST_ANALYZE = 2_000
SQLITE_MAX_ANALYZE_INTERVAL = 1_000_000
ID_LIMIT = 128
NAME_LIMIT = 200
LABEL_KEY_LIMIT = 128
LABEL_VALUE_LIMIT = 1024
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]*")
_KNOWN_TERMINATION = frozenset(trajectory_pb2.TerminationReason.values())
_KNOWN_OUTCOME = frozenset(trajectory_pb2.OutcomeKind.values())

__all__ = [
    "IngestItemResult",
    "IngestResult",
    "ItemStatus",
    "SearchHit",
    "SearchQuery",
    "TrajectoryFilter",
    "TrajectoryStore",
    "View",
    "validate_scores",
    "validate_trajectory",
]


# --- Domain types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    trajectory: Trajectory
    score: float
    """Relevance (full text) or cosine similarity; 0 when the results are not ranked."""


class ItemStatus(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True)
class IngestItemResult:
    index: int
    """0-based position of the item in the batch given to `ingest`."""
    trajectory_id: str
    status: ItemStatus
    error: CohortError | None = None


@dataclass
class IngestResult:
    items: list[IngestItemResult]

    @property
    def stored_count(self) -> int:
        return sum(1 for item in self.items if item.status is ItemStatus.STORED)

    @property
    def duplicate_count(self) -> int:
        return sum(1 for item in self.items if item.status is ItemStatus.DUPLICATE)

    @property
    def failures(self) -> list[IngestItemResult]:
        return [item for item in self.items if item.status is ItemStatus.FAILED]


# --- Validation -----------------------------------------------------------------------------------


def _finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(name, "must be a finite number")


def validate_trajectory(t: Trajectory) -> None:
    """Raises `InvalidArgument` naming the first bad field (`trajectory.<path>`)."""
    if t.trajectory_id:
        if len(t.trajectory_id) > ID_LIMIT or not _ID_PATTERN.fullmatch(t.trajectory_id):
            raise InvalidArgument(
                "trajectory.trajectory_id",
                f"must be 1 to {ID_LIMIT} letters, digits or ._:@/+=- starting with a letter or digit",
            )
    for name, value, limit in (
        ("agent.name", t.agent.name, NAME_LIMIT),
        ("agent.version", t.agent.version, NAME_LIMIT),
        ("job_id", t.job_id, ID_LIMIT),
        ("group_id", t.group_id, ID_LIMIT),
        ("query_id", t.query_id, NAME_LIMIT),
    ):
        if len(value) > limit:
            raise InvalidArgument(f"trajectory.{name}", f"is longer than {limit} characters")
    if t.iteration < 0:
        raise InvalidArgument("trajectory.iteration", "must not be negative")
    if t.HasField("max_steps") and t.max_steps < 0:
        raise InvalidArgument("trajectory.max_steps", "must not be negative")
    if t.cost_micro_usd < 0:
        raise InvalidArgument("trajectory.cost_micro_usd", "must not be negative")
    if t.termination_reason not in _KNOWN_TERMINATION:
        raise InvalidArgument("trajectory.termination_reason", f"unknown value {t.termination_reason}")
    if t.HasField("reward"):
        _finite(t.reward, "trajectory.reward")
    if t.HasField("advantage"):
        _finite(t.advantage, "trajectory.advantage")
    if t.HasField("execution_time_seconds"):
        _finite(t.execution_time_seconds, "trajectory.execution_time_seconds")
        if t.execution_time_seconds < 0:
            raise InvalidArgument("trajectory.execution_time_seconds", "must not be negative")
    if t.HasField("outcome"):
        outcome = t.outcome
        if outcome.kind not in _KNOWN_OUTCOME:
            raise InvalidArgument("trajectory.outcome.kind", f"unknown value {outcome.kind}")
        if outcome.HasField("score") and not 0.0 <= outcome.score <= 1.0:
            raise InvalidArgument("trajectory.outcome.score", "must be between 0 and 1")
        if not 0.0 <= outcome.confidence <= 1.0:
            raise InvalidArgument("trajectory.outcome.confidence", "must be between 0 and 1")
    for i, component in enumerate(t.reward_components):
        _finite(component.value, f"trajectory.reward_components[{i}].value")
        _finite(component.weight, f"trajectory.reward_components[{i}].weight")
    for i, decision in enumerate(t.decisions):
        if not math.isfinite(decision.log_prob) or decision.log_prob > 0:
            raise InvalidArgument(f"trajectory.decisions[{i}].log_prob", "must be a finite log-probability")
        if decision.options and not 0 <= decision.chosen_index < len(decision.options):
            raise InvalidArgument(f"trajectory.decisions[{i}].chosen_index", "is outside `options`")
    for i, step in enumerate(t.agent_steps):
        if step.HasField("step_reward"):
            _finite(step.step_reward, f"trajectory.agent_steps[{i}].step_reward")
    for key, value in t.labels.items():
        if not key.strip():
            raise InvalidArgument("trajectory.labels", "a label key is empty")
        if len(key) > LABEL_KEY_LIMIT:
            raise InvalidArgument(f"trajectory.labels[{key[:40]}]", f"key is longer than {LABEL_KEY_LIMIT}")
        if len(value) > LABEL_VALUE_LIMIT:
            raise InvalidArgument(f"trajectory.labels[{key}]", f"value is longer than {LABEL_VALUE_LIMIT}")


def validate_scores(request: collector_pb2.RecordScoresRequest) -> None:
    """Raises `InvalidArgument` naming the first bad field (`scores[i].<path>`)."""
    if not request.scores:
        raise InvalidArgument("scores", "is required")
    if len(request.scores) > MAX_SCORES:
        raise InvalidArgument("scores", f"holds {len(request.scores)} scores; at most {MAX_SCORES} per call")
    seen: dict[str, int] = {}
    for i, score in enumerate(request.scores):
        path = f"scores[{i}]"
        if not score.trajectory_id:
            raise InvalidArgument(f"{path}.trajectory_id", "is required")
        if score.trajectory_id in seen:
            # Two scores of one trajectory in one call: which one should win is the caller's to say.
            first = seen[score.trajectory_id]
            raise InvalidArgument(f"{path}.trajectory_id", f"repeats scores[{first}]; one per trajectory")
        seen[score.trajectory_id] = i
        _finite(score.reward, f"{path}.reward")
        for k, component in enumerate(score.components):
            _finite(component.value, f"{path}.components[{k}].value")
            _finite(component.weight, f"{path}.components[{k}].weight")
        if score.HasField("advantage"):
            _finite(score.advantage, f"{path}.advantage")
        for k, advantage in enumerate(score.decision_advantages):
            _finite(advantage, f"{path}.decision_advantages[{k}]")


# --- Preparing a batch (worker thread) --------------------------------------------------------------


@dataclass
class _Prepared:
    index: int
    trajectory_id: str
    sha256: str
    row: tuple
    """Values in `_COLUMNS` order (create_time as datetime)."""
    labels: list[tuple[str, str]]


_COLUMNS = tuple(T.c.keys())
_PG_TYPES = tuple(
    # text, not varchar(n): an explicit cast to varchar(n) would cut a long value short silently
    # where inserting it into the column refuses it.
    "text" if isinstance(column.type, String) else column.type.compile(dialect=postgresql.dialect())
    for column in T.c
)
"""Each column's type as `unnest` reads it, in `_COLUMNS` order."""
_ROW_START_TIME = _COLUMNS.index("start_time")
_ROW_CREATE_TIME = _COLUMNS.index("create_time")
_ROW_SEARCH_TEXT = _COLUMNS.index("search_text")
_ROW_EMBEDDING = _COLUMNS.index("embedding")


def search_text_of(t: Trajectory) -> str:
    """Task, final result, then results, responses and messages: bounded by `SEARCH_TEXT_LIMIT`."""
    parts: list[str] = [t.task]
    if t.HasField("final_result"):
        parts.append(t.final_result)
    size = len(t.task) + len(parts[-1])
    seen: set[str] = set()

    def add(text: str) -> bool:
        nonlocal size
        if text and text not in seen:
            seen.add(text)
            parts.append(text)
            size += len(text) + 1
        return size < SEARCH_TEXT_LIMIT

    for step in t.agent_steps:
        for result in step.tool_results:
            if not add(result.result) or not add(result.error):
                break
        if not add(step.reflection) or not add(step.error) or not add(step.llm_response.content):
            break
    if size < SEARCH_TEXT_LIMIT:
        for interaction in t.llm_interactions:
            if not add(interaction.response.content):
                break
            for message in interaction.input_messages:
                if not add(message.content):
                    break
    return "\n".join(parts)[:SEARCH_TEXT_LIMIT]


def embedding_text_of(t: Trajectory) -> str:
    """What similarity compares: task, final result and the names of the tools called."""
    tools: list[str] = []
    for step in t.agent_steps:
        for call in step.tool_calls:
            tools.append(call.name)
    if not tools:
        for interaction in t.llm_interactions:
            for call in interaction.response.tool_calls:
                tools.append(call.name)
    return " ".join((t.task, t.final_result, *tools))


class _Pipeline:
    """The per-trajectory CPU work; one instance per store, used from worker threads."""

    def __init__(self, redactor: Redactor, prices: PriceTable | None, fill_usage: Any) -> None:
        self.redactor = redactor
        self._prices = prices
        self._fill_usage = fill_usage

    def prepare(
        self, tenant_id: str, trajectories: Sequence[Trajectory], now: datetime
    ) -> list[_Prepared | CohortError]:
        prepared: list[_Prepared | CohortError] = []
        texts: list[str] = []
        good: list[_Prepared] = []
        stamp_seconds = int(now.timestamp())
        stamp_nanos = now.microsecond * 1000
        for index, t in enumerate(trajectories):
            try:
                validate_trajectory(t)
            except CohortError as error:
                prepared.append(error)
                continue
            t.tenant_id = tenant_id
            t.ClearField("create_time")
            t.superseded = False
            if not t.trajectory_id:
                t.trajectory_id = uuid7()
            self.redactor.redact_trajectory(t)
            sha = hashlib.sha256(t.SerializeToString(deterministic=True)).hexdigest()
            if self._fill_usage is not None:
                self._fill_usage(t, self._prices)
            t.create_time.seconds = stamp_seconds
            t.create_time.nanos = stamp_nanos
            start_time = t.start_time.ToDatetime(UTC) if t.HasField("start_time") else None
            values = {
                "tenant_id": tenant_id,
                "trajectory_id": t.trajectory_id,
                "agent_name": t.agent.name,
                "agent_version": t.agent.version,
                "job_id": t.job_id,
                "group_id": t.group_id,
                "iteration": t.iteration,
                "query_id": t.query_id,
                "success": t.success if t.HasField("success") else None,
                "termination_reason": t.termination_reason,
                "reward": t.reward if t.HasField("reward") else None,
                "cost_micro_usd": t.cost_micro_usd,
                "start_time": start_time,
                "create_time": now,
                "superseded": False,
                "content_sha256": sha,
                "document": t.SerializeToString(),
                "search_text": search_text_of(t),
                "embedding": b"",  # below, for the whole batch at once
            }
            item = _Prepared(
                index=index,
                trajectory_id=t.trajectory_id,
                sha256=sha,
                row=tuple(values[name] for name in _COLUMNS),
                labels=list(t.labels.items()),
            )
            prepared.append(item)
            good.append(item)
            texts.append(embedding_text_of(t))
        if good:
            vectors = embedding.embed_many(texts)
            for item, vector in zip(good, vectors, strict=True):
                row = list(item.row)
                row[_ROW_EMBEDDING] = vector.tobytes()
                item.row = tuple(row)
        return prepared


# --- Search SQL -----------------------------------------------------------------------------------


def filter_conditions(
    tenant_id: str, f: TrajectoryFilter, *, sqlite: bool = False
) -> list[ColumnElement[bool]]:
    """Conditions on `trajectories` for the tenant and the filter.

    On SQLite (no column statistics) the low-selectivity columns (success, termination reason,
    reward) are compared as `col + 0`, which SQLite cannot drive an index with: it then walks the
    create-time index in result order and checks them per row, instead of collecting and sorting a
    third of the table. PostgreSQL chooses with its statistics.
    """
    conditions: list[ColumnElement[bool]] = [T.c.tenant_id == tenant_id]
    success = type_coerce(T.c.success, Integer()) + 0 if sqlite else T.c.success
    reason = T.c.termination_reason + 0 if sqlite else T.c.termination_reason
    reward = T.c.reward + 0 if sqlite else T.c.reward
    if not f.include_superseded:
        conditions.append(T.c.superseded == false())
    for name in ("agent_name", "agent_version", "job_id", "group_id"):
        value = getattr(f, name)
        if value:
            conditions.append(T.c[name] == value)
    if f.iteration is not None:
        conditions.append(T.c.iteration == f.iteration)
    if f.success is not None:
        conditions.append(success == int(f.success) if sqlite else success == f.success)
    if f.termination_reasons:
        conditions.append(reason.in_(sorted(set(f.termination_reasons))))
    if f.min_reward is not None:
        conditions.append(reward >= f.min_reward)
    if f.max_reward is not None:
        conditions.append(reward <= f.max_reward)
    if f.created_after is not None:
        conditions.append(T.c.create_time >= f.created_after)
    if f.created_before is not None:
        conditions.append(T.c.create_time < f.created_before)
    for key, value in f.labels:
        conditions.append(
            exists(
                select(literal_column("1")).where(
                    L.c.tenant_id == T.c.tenant_id,
                    L.c.trajectory_id == T.c.trajectory_id,
                    L.c.key == key,
                    L.c.value == value,
                )
            )
        )
    return conditions


def full_text_query(text: str, *, sqlite: bool) -> str:
    """The user's words as a query every word of which must match; never FTS syntax errors."""
    words = re.findall(r"\w+", text)
    if not words:
        raise InvalidArgument("text_query", "has no words to search for")
    if sqlite:
        return " ".join(f'"{word}"' for word in words)
    return " ".join(words)


def text_matches(tenant_id: str, query: str, *, sqlite: bool) -> CTE:
    """A CTE of (trajectory_id, score) for the tenant's full-text matches; higher score is better."""
    if sqlite:
        # MATERIALIZED: bm25() may only run in the FTS query itself, never in a flattened outer WHERE.
        return (
            select(FTS.c.trajectory_id.label("trajectory_id"), (-func.bm25(_FTS_NAME)).label("score"))
            .where(_FTS_NAME.op("MATCH")(query), FTS.c.tenant_id == tenant_id)
            .cte("text_matches")
            .prefix_with("MATERIALIZED")
        )
    tsquery = func.websearch_to_tsquery(_TSCONFIG, query)
    vector = func.to_tsvector(_TSCONFIG, T.c.search_text)  # the expression of the GIN index
    return (
        select(
            T.c.trajectory_id.label("trajectory_id"),
            cast(func.ts_rank(vector, tsquery), Double()).label("score"),
        )
        .where(T.c.tenant_id == tenant_id, vector.op("@@")(tsquery))
        .cte("text_matches")
    )


# --- The store ------------------------------------------------------------------------------------


class TrajectoryStore:
    """The collector's trajectory store on SQLite or PostgreSQL."""

    def __init__(
        self,
        database: Database,
        *,
        prices: PriceTable | None = None,
        redactor: Redactor | None = None,
        embedding_cache_rows: int = 200_000,
    ) -> None:
        self._db = database
        self._sqlite = database.is_sqlite
        self._pipeline = _Pipeline(
            redactor if redactor is not None else Redactor(),
            prices if prices is not None else PriceTable.load(None),
            fill_usage_and_cost,
        )
        self._cache = EmbeddingCache(max_rows=embedding_cache_rows)
        self._stored_since_analyze = 0
        self._analyze_after = SQLITE_FIRST_ANALYZE

    def redact(self, trajectory: Trajectory) -> None:
        """Redacts `trajectory` in place with the store's rules, as `ingest` does."""
        self._pipeline.redactor.redact_trajectory(trajectory)

    # -- ingest --

    async def ingest(self, tenant_id: str, trajectories: Sequence[Trajectory]) -> IngestResult:
        """Stores a batch in one transaction; per-item results in input order.

        The messages are modified in place (tenant, id, create time, redaction, usage).
        """
        if not trajectories:
            return IngestResult(items=[])
        now = datetime.now(UTC)
        prepared = await asyncio.to_thread(self._pipeline.prepare, tenant_id, trajectories, now)
        # First occurrence of each id goes to the database; repeats are judged against it.
        first: dict[str, _Prepared] = {}
        for item in prepared:
            if isinstance(item, _Prepared) and item.trajectory_id not in first:
                first[item.trajectory_id] = item
        candidates = list(first.values())
        if candidates:
            if self._sqlite:
                inserted, existing = await self._write_sqlite(tenant_id, candidates)
            else:
                inserted, existing = await self._write_postgres(tenant_id, candidates)
        else:
            inserted, existing = set(), {}
        results: list[IngestItemResult] = []
        for index, item in enumerate(prepared):
            if isinstance(item, CohortError):
                results.append(
                    IngestItemResult(index, trajectories[index].trajectory_id, ItemStatus.FAILED, item)
                )
                continue
            tid = item.trajectory_id
            if tid in inserted and first[tid] is item:
                results.append(IngestItemResult(index, tid, ItemStatus.STORED))
                continue
            stored_sha = first[tid].sha256 if tid in inserted else existing.get(tid)
            if stored_sha == item.sha256:
                results.append(IngestItemResult(index, tid, ItemStatus.DUPLICATE))
            else:
                error = AlreadyExists(
                    f"trajectory {tid!r} is already stored with different content",
                    metadata={"trajectory_id": tid},
                )
                results.append(IngestItemResult(index, tid, ItemStatus.FAILED, error))
        if inserted:
            self._cache.add_many(
                tenant_id,
                [
                    (item.trajectory_id, item.row[_ROW_EMBEDDING])
                    for item in candidates
                    if item.trajectory_id in inserted
                ],
            )
            if self._sqlite:
                await self._maybe_analyze(len(inserted))
        return IngestResult(items=results)

    async def _maybe_analyze(self, stored: int) -> None:
        """SQLite has no autovacuum to keep planner statistics: gather them as the table grows.

        Without them SQLite walks the create-time index for every query (ORDER BY wins), so a
        `group_id` filter over 100k rows scans them all. A full ANALYZE of 100k rows takes ~0.1 s
        (a sampled one, `analysis_limit`, gave statistics too poor to fix that); the interval doubles,
        so the total cost stays proportional to the rows stored.
        """
        self._stored_since_analyze += stored
        if self._stored_since_analyze < self._analyze_after:
            return
        self._stored_since_analyze = 0
        self._analyze_after = min(self._analyze_after * 2, SQLITE_MAX_ANALYZE_INTERVAL)
        async with write_transaction(self._db.sessions) as session:
            connection = await session.connection()
            await connection.exec_driver_sql("ANALYZE trajectories")
            await connection.exec_driver_sql("ANALYZE trajectory_labels")

    async def _write_postgres(
        self, tenant_id: str, items: list[_Prepared]
    ) -> tuple[set[str], dict[str, str]]:
        columns = list(zip(*(item.row for item in items), strict=True))
        placeholders = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(_PG_TYPES))
        insert_rows = (
            f"INSERT INTO trajectories ({', '.join(_COLUMNS)}) SELECT * FROM unnest({placeholders}) "
            "ON CONFLICT (tenant_id, trajectory_id) DO NOTHING RETURNING trajectory_id"
        )
        async with self._db.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            async with raw.transaction():
                returned = await raw.fetch(insert_rows, *columns)
                inserted = {record[0] for record in returned}
                existing: dict[str, str] = {}
                if len(inserted) < len(items):
                    missing = [item.trajectory_id for item in items if item.trajectory_id not in inserted]
                    records = await raw.fetch(
                        "SELECT trajectory_id, content_sha256 FROM trajectories "
                        "WHERE tenant_id = $1 AND trajectory_id = ANY($2::text[])",
                        tenant_id,
                        missing,
                    )
                    existing = {record[0]: record[1] for record in records}
                labels = [
                    (tenant_id, item.trajectory_id, key, value)
                    for item in items
                    if item.trajectory_id in inserted
                    for key, value in item.labels
                ]
                if labels:
                    await raw.execute(
                        "INSERT INTO trajectory_labels (tenant_id, trajectory_id, key, value) "
                        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
                        *zip(*labels, strict=True),
                    )
        return inserted, existing

    async def _write_sqlite(self, tenant_id: str, items: list[_Prepared]) -> tuple[set[str], dict[str, str]]:
        assert self._db.sqlite_writer is not None
        return await self._db.sqlite_writer.run(_insert_sqlite, tenant_id, items)

    # -- superseded work --

    async def supersede(
        self, request: collector_pb2.SupersedeTrajectoriesRequest
    ) -> collector_pb2.SupersedeTrajectoriesResponse:
        """Marks `job_id`'s trajectories of iteration `from_iteration` on superseded, except those
        labelled `ATTEMPT_LABEL` = `current_attempt`; the count marked (already marked ones are not counted
        again). A repeated `request_id` returns the first answer."""
        if not request.job_id:
            raise InvalidArgument("job_id", "is required")
        if request.from_iteration < 0:
            raise InvalidArgument("from_iteration", f"must be >= 0, got {request.from_iteration}")
        if request.current_attempt < 1:
            raise InvalidArgument("current_attempt", f"must be >= 1, got {request.current_attempt}")
        tenant_id = current_tenant()
        current = select(L.c.trajectory_id).where(
            L.c.tenant_id == tenant_id, L.c.key == ATTEMPT_LABEL, L.c.value == str(request.current_attempt)
        )
        statement = (
            update(T)
            .where(
                T.c.tenant_id == tenant_id,
                T.c.job_id == request.job_id,
                T.c.iteration >= request.from_iteration,
                T.c.superseded == false(),
                T.c.trajectory_id.not_in(current),
            )
            .values(superseded=True)
        )

        async def mark(session: AsyncSession) -> collector_pb2.SupersedeTrajectoriesResponse:
            result = await session.execute(statement)
            return collector_pb2.SupersedeTrajectoriesResponse(superseded_count=int(result.rowcount))

        return await idempotency.run_once(
            self._db, SUPERSEDE_SCOPE, request, collector_pb2.SupersedeTrajectoriesResponse, mark
        )

    # -- scores --

    async def record_scores(
        self, tenant_id: str, request: collector_pb2.RecordScoresRequest
    ) -> collector_pb2.RecordScoresResponse:
        """Writes each score onto the tenant's stored trajectory (document and `reward` column) in
        one transaction; per-score failures in the response. A repeated `request_id` returns the
        first answer; the same scores sent again without one change nothing."""
        validate_scores(request)
        ids = sorted(score.trajectory_id for score in request.scores)

        async def write(session: AsyncSession) -> collector_pb2.RecordScoresResponse:
            documents: dict[str, bytes] = {}
            for start in range(0, len(ids), _SCORE_READ_CHUNK):
                chunk = ids[start : start + _SCORE_READ_CHUNK]
                statement = (
                    select(T.c.trajectory_id, T.c.document)
                    .where(T.c.tenant_id == tenant_id, T.c.trajectory_id.in_(chunk))
                    .order_by(T.c.trajectory_id)
                )
                if not self._sqlite:
                    # A concurrent writer of the same trajectory must wait, or one of the two
                    # read-modify-writes of its document would be lost. SQLite's write
                    # transaction already holds the database's write lock.
                    statement = statement.with_for_update()
                documents.update((row[0], row[1]) for row in await session.execute(statement))
            updates, response = await asyncio.to_thread(_scored_documents, request.scores, documents)
            if updates:
                await session.execute(
                    _UPDATE_SCORE,
                    [
                        {"b_tenant": tenant_id, "b_id": tid, "b_reward": reward, "b_document": document}
                        for tid, reward, document in updates
                    ],
                )
            return response

        return await idempotency.run_once(
            self._db, RECORD_SCORES_SCOPE, request, collector_pb2.RecordScoresResponse, write
        )

    # -- get --

    async def get(self, tenant_id: str, trajectory_id: str) -> Trajectory:
        if not trajectory_id:
            raise InvalidArgument("trajectory_id", "is required")
        async with self._db.sessions() as session:
            row = (
                await session.execute(
                    select(T.c.document, T.c.superseded).where(
                        T.c.tenant_id == tenant_id, T.c.trajectory_id == trajectory_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(
                f"trajectory {trajectory_id!r} not found", metadata={"trajectory_id": trajectory_id}
            )
        return _decode(row[0], row[1], View.FULL)

    # -- search --

    async def search(self, tenant_id: str, query: SearchQuery) -> tuple[list[SearchHit], str]:
        """One page of hits and the token of the next page ("" on the last page)."""
        page_size = check_page_size(query.page_size or DEFAULT_PAGE_SIZE)
        validate_filter(query.filter)
        if query.similar_to_text and query.similar_to_trajectory_id:
            raise InvalidArgument("similar_to_text", "set either similar_to_text or similar_to_trajectory_id")
        fts_query = (
            full_text_query(query.text_query, sqlite=self._sqlite) if query.text_query.strip() else None
        )
        after = decode_page_token(query)
        if query.similar_to_text or query.similar_to_trajectory_id:
            return await self._search_similar(tenant_id, query, page_size, fts_query, after)
        if fts_query is not None:
            return await self._search_text(tenant_id, query, page_size, fts_query, after)
        return await self._search_recent(tenant_id, query, page_size, after)

    async def _search_recent(
        self, tenant_id: str, query: SearchQuery, page_size: int, after: list[Any] | None
    ) -> tuple[list[SearchHit], str]:
        conditions = filter_conditions(tenant_id, query.filter, sqlite=self._sqlite)
        if after is not None:
            after_time, after_id = time_key(after)
            conditions.append(tuple_(T.c.create_time, T.c.trajectory_id) < tuple_(after_time, after_id))
        # Keys first, documents second: sorting narrow rows, never documents.
        statement = (
            select(T.c.trajectory_id, T.c.create_time)
            .where(*conditions)
            .order_by(T.c.create_time.desc(), T.c.trajectory_id.desc())
            .limit(page_size + 1)
        )
        async with self._db.sessions() as session:
            keys = (await session.execute(statement)).all()
        more = len(keys) > page_size
        keys = keys[:page_size]
        hits = await self._hits(tenant_id, [(row[0], 0.0) for row in keys], query.view)
        token = encode_page_token(query, [keys[-1][1].isoformat(), keys[-1][0]]) if more else ""
        return hits, token

    async def _search_text(
        self, tenant_id: str, query: SearchQuery, page_size: int, fts_query: str, after: list[Any] | None
    ) -> tuple[list[SearchHit], str]:
        matches = text_matches(tenant_id, fts_query, sqlite=self._sqlite)
        conditions = filter_conditions(tenant_id, query.filter, sqlite=self._sqlite)
        if after is not None:
            score, after_id = ranked_key(after)
            conditions.append(
                or_(matches.c.score < score, and_(matches.c.score == score, T.c.trajectory_id > after_id))
            )
        statement = (
            select(T.c.trajectory_id, matches.c.score)
            .select_from(matches.join(T, T.c.trajectory_id == matches.c.trajectory_id))
            .where(*conditions)
            .order_by(matches.c.score.desc(), T.c.trajectory_id.asc())
            .limit(page_size + 1)
        )
        async with self._db.sessions() as session:
            keys = (await session.execute(statement)).all()
        more = len(keys) > page_size
        keys = keys[:page_size]
        hits = await self._hits(tenant_id, [(row[0], float(row[1])) for row in keys], query.view)
        token = encode_page_token(query, [float(keys[-1][1]), keys[-1][0]]) if more else ""
        return hits, token

    async def _hits(self, tenant_id: str, ranked: list[tuple[str, float]], view: View) -> list[SearchHit]:
        """The documents of `ranked` (id, score) in that order (ids gone since are left out)."""
        if not ranked:
            return []
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(T.c.trajectory_id, T.c.document, T.c.superseded).where(
                    T.c.tenant_id == tenant_id, T.c.trajectory_id.in_([tid for tid, _ in ranked])
                )
            )
            documents = {row[0]: (row[1], row[2]) for row in rows}
        ranked = [(tid, score) for tid, score in ranked if tid in documents]
        trajectories = await _decode_many([documents[tid] for tid, _ in ranked], view)
        return [SearchHit(t, score) for t, (_, score) in zip(trajectories, ranked, strict=True)]

    async def _search_similar(
        self,
        tenant_id: str,
        query: SearchQuery,
        page_size: int,
        fts_query: str | None,
        after: list[Any] | None,
    ) -> tuple[list[SearchHit], str]:
        exclude = ""
        if query.similar_to_trajectory_id:
            exclude = query.similar_to_trajectory_id
            vector = await self._stored_embedding(tenant_id, exclude)
        else:
            vector = await asyncio.to_thread(embedding.embed, query.similar_to_text)
        conditions = filter_conditions(tenant_id, query.filter, sqlite=self._sqlite)
        if exclude:
            conditions.append(T.c.trajectory_id != exclude)
        statement = select(T.c.trajectory_id).where(*conditions)
        if fts_query is not None:
            matches = text_matches(tenant_id, fts_query, sqlite=self._sqlite)
            statement = statement.join(matches, T.c.trajectory_id == matches.c.trajectory_id)
        async with self._db.engine.connect() as connection:
            ids = await self._fetch_ids(connection, statement)
            looked_up, missing = self._cache.lookup(tenant_id, ids)
            for start in range(0, len(missing), 5000):
                chunk = missing[start : start + 5000]
                rows = await connection.execute(
                    select(T.c.trajectory_id, T.c.embedding).where(
                        T.c.tenant_id == tenant_id, T.c.trajectory_id.in_(chunk)
                    )
                )
                self._cache.add_many(tenant_id, [(r[0], r[1]) for r in rows])
        after_key = ranked_key(after) if after is not None else None
        snapshot = self._cache.snapshot(tenant_id, ids, None if missing else looked_up)
        ranked = await asyncio.to_thread(rank_by_similarity, snapshot, vector, after_key, page_size + 1)
        more = len(ranked) > page_size
        ranked = ranked[:page_size]
        hits = await self._hits(tenant_id, ranked, query.view)
        token = encode_page_token(query, [ranked[-1][1], ranked[-1][0]]) if more and ranked else ""
        return hits, token

    async def _fetch_ids(self, connection: AsyncConnection, statement: Select) -> list[str]:
        """The ids `statement` selects, as one aggregated string: 100k rows cost one row's overhead.

        Ids never contain a newline (`validate_trajectory` allows no whitespace).
        """
        ids = statement.subquery()
        aggregate = (
            func.group_concat(ids.c.trajectory_id, "\n")
            if self._sqlite
            else func.string_agg(ids.c.trajectory_id, literal("\n"))
        )
        joined = (await connection.execute(select(aggregate))).scalar()
        return joined.split("\n") if joined else []

    async def _stored_embedding(self, tenant_id: str, trajectory_id: str) -> np.ndarray:
        async with self._db.sessions() as session:
            blob = (
                await session.execute(
                    select(T.c.embedding).where(
                        T.c.tenant_id == tenant_id, T.c.trajectory_id == trajectory_id
                    )
                )
            ).scalar()
        if blob is None:
            raise NotFound(
                f"trajectory {trajectory_id!r} not found", metadata={"trajectory_id": trajectory_id}
            )
        return embedding.from_bytes(blob)

    # -- export --

    async def export_batches(
        self, tenant_id: str, filter: TrajectoryFilter, limit: int = 0, *, batch_size: int = EXPORT_BATCH
    ) -> AsyncIterator[list[Trajectory]]:
        """Matching trajectories, oldest first, in batches; at most `limit` in all (0: no limit).

        Keyset paging by (create_time, trajectory_id): one short query per batch, so memory stays
        bounded by the batch and no transaction is held open while the caller sends.
        """
        validate_filter(filter)
        if limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        sent = 0
        after: tuple[datetime, str] | None = None
        while limit == 0 or sent < limit:
            size = batch_size if limit == 0 else min(batch_size, limit - sent)
            conditions = filter_conditions(tenant_id, filter, sqlite=self._sqlite)
            if after is not None:
                conditions.append(tuple_(T.c.create_time, T.c.trajectory_id) > tuple_(*after))
            statement = (
                select(T.c.document, T.c.superseded, T.c.create_time, T.c.trajectory_id)
                .where(*conditions)
                .order_by(T.c.create_time.asc(), T.c.trajectory_id.asc())
                .limit(size)
            )
            async with self._db.sessions() as session:
                rows = (await session.execute(statement)).all()
            if not rows:
                return
            after = (rows[-1][2], rows[-1][3])
            sent += len(rows)
            yield await _decode_many([(r[0], r[1]) for r in rows], View.FULL)
            if len(rows) < size:
                return

    async def export(
        self, tenant_id: str, filter: TrajectoryFilter, limit: int = 0
    ) -> AsyncIterator[Trajectory]:
        async for batch in self.export_batches(tenant_id, filter, limit):
            for trajectory in batch:
                yield trajectory


# --- Helpers ----------------------------------------------------------------------------------------


_UPDATE_SCORE = (
    update(T)
    .where(T.c.tenant_id == bindparam("b_tenant"), T.c.trajectory_id == bindparam("b_id"))
    .values(reward=bindparam("b_reward"), document=bindparam("b_document"))
)


def _score_fields(t: Trajectory) -> tuple:
    return (
        t.reward if t.HasField("reward") else None,
        [component.SerializeToString(deterministic=True) for component in t.reward_components],
        t.advantage if t.HasField("advantage") else None,
        [d.advantage if d.HasField("advantage") else None for d in t.decisions],
    )


def _apply_stored_score(t: Trajectory, score: collector_pb2.TrajectoryScore, index: int) -> bool:
    """Replaces `t`'s score with `score`; False when `t` already held exactly that score."""
    if score.decision_advantages and len(score.decision_advantages) != len(t.decisions):
        raise InvalidArgument(
            f"scores[{index}].decision_advantages",
            f"holds {len(score.decision_advantages)} advantages for the trajectory's "
            f"{len(t.decisions)} decisions; give one per decision or none",
        )
    before = _score_fields(t)
    t.reward = score.reward
    del t.reward_components[:]
    t.reward_components.extend(score.components)
    if score.HasField("advantage"):
        t.advantage = score.advantage
    else:
        t.ClearField("advantage")
    if score.decision_advantages:
        for decision, advantage in zip(t.decisions, score.decision_advantages, strict=True):
            decision.advantage = advantage
    else:
        for decision in t.decisions:
            decision.ClearField("advantage")
    return _score_fields(t) != before


def _scored_documents(
    scores: Sequence[collector_pb2.TrajectoryScore], documents: dict[str, bytes]
) -> tuple[list[tuple[str, float, bytes]], collector_pb2.RecordScoresResponse]:
    """The (id, reward, new document) rows to write, and the response; runs in a worker thread."""
    updates: list[tuple[str, float, bytes]] = []
    response = collector_pb2.RecordScoresResponse()
    for index, score in enumerate(scores):
        tid = score.trajectory_id
        document = documents.get(tid)
        try:
            if document is None:
                raise _not_found(tid)
            trajectory = Trajectory.FromString(document)
            changed = _apply_stored_score(trajectory, score, index)
        except CohortError as error:
            response.failures.add(index=index, trajectory_id=tid, status=status_of(error))
            continue
        if changed:
            updates.append((tid, score.reward, trajectory.SerializeToString()))
            response.recorded_count += 1
        else:
            response.unchanged_count += 1
    return updates, response


def _not_found(trajectory_id: str) -> NotFound:
    # The same message for a missing trajectory and another tenant's: never say which.
    return NotFound(f"trajectory {trajectory_id!r} not found", metadata={"trajectory_id": trajectory_id})


def _insert_sqlite(
    connection: sqlite3.Connection, tenant_id: str, items: list[_Prepared]
) -> tuple[set[str], dict[str, str]]:
    """Inserts the items whose ids are not stored yet (rows, full-text entries, labels); the ids
    inserted and the content hash of each id that was already there. Runs in a `SqliteWriter`
    transaction."""
    ids = [item.trajectory_id for item in items]
    existing: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        existing.update(
            connection.execute(
                "SELECT trajectory_id, content_sha256 FROM trajectories "
                f"WHERE tenant_id = ? AND trajectory_id IN ({marks})",
                (tenant_id, *chunk),
            )
        )
    new = [item for item in items if item.trajectory_id not in existing]
    if new:
        connection.executemany(_SQLITE_INSERT_TRAJECTORY, [_sqlite_row(item.row) for item in new])
        connection.executemany(
            "INSERT INTO trajectories_fts (search_text, tenant_id, trajectory_id) VALUES (?, ?, ?)",
            [(item.row[_ROW_SEARCH_TEXT], tenant_id, item.trajectory_id) for item in new],
        )
        labels = [(tenant_id, item.trajectory_id, key, value) for item in new for key, value in item.labels]
        if labels:
            connection.executemany(
                "INSERT INTO trajectory_labels (tenant_id, trajectory_id, key, value) VALUES (?, ?, ?, ?)",
                labels,
            )
    return {item.trajectory_id for item in new}, existing


_SQLITE_INSERT_TRAJECTORY = (
    f"INSERT INTO trajectories ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


def _sqlite_row(row: tuple) -> tuple:
    values = list(row)
    start = values[_ROW_START_TIME]
    if start is not None:
        values[_ROW_START_TIME] = start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    values[_ROW_CREATE_TIME] = values[_ROW_CREATE_TIME].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return tuple(values)


_HEAVY_FIELDS = ("llm_interactions", "agent_steps", "decisions")


def _decode(document: bytes, superseded: Any, view: View) -> Trajectory:
    trajectory = Trajectory.FromString(document)
    trajectory.superseded = bool(superseded)
    if view is View.BASIC:
        for name in _HEAVY_FIELDS:
            trajectory.ClearField(name)
    return trajectory


def _decode_all(rows: Sequence[tuple[bytes, Any]], view: View) -> list[Trajectory]:
    return [_decode(document, superseded, view) for document, superseded in rows]


async def _decode_many(rows: Sequence[tuple[bytes, Any]], view: View) -> list[Trajectory]:
    if len(rows) <= 8:
        return _decode_all(rows, view)
    return await asyncio.to_thread(_decode_all, rows, view)
