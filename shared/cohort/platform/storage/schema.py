"""Table definitions: the one source of truth that Alembic migrations are checked against.

Only portable column types are used, so one migration runs on SQLite (embedded) and PostgreSQL
(production). Every row carries `tenant_id`; every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints: SQLite cannot ALTER a constraint, so Alembic's batch mode recreates tables and
# must be able to refer to every constraint by a stable name; PostgreSQL then gets the same names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zone type and hands back naive datetimes; this stores UTC and re-attaches
    UTC on the way out, so callers always compare aware datetimes. Naive input is rejected rather
    than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC timestamp")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key. Only the SHA-256 of its secret part is stored; the plaintext is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128), ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


# --- Trajectories (migration 0002) ----------------------------------------------------------------
#
# One row per trajectory. The full document is stored as protobuf binary (`document`): encoding and
# decoding it is C code and several times cheaper than canonical JSON, which matters at thousands of
# trajectories per second; everything a query filters or ranks on is a column beside it, so no query
# ever has to look inside the document. Full-text search is dialect-specific and lives outside this
# metadata (see `SEARCH_OBJECTS`): an FTS5 table on SQLite, an expression GIN index on PostgreSQL.

TRAJECTORY_SEARCH_FTS_TABLE = "trajectories_fts"
"""SQLite only: the FTS5 table (search_text, tenant_id UNINDEXED, trajectory_id UNINDEXED)."""

TRAJECTORY_SEARCH_TSV_INDEX = "ix_trajectories_search_tsv"
"""PostgreSQL only: GIN index on `to_tsvector('english', search_text)`."""


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic `include_object` hook: leaves the dialect-specific full-text objects out of comparisons.

    They are created by migration 0002 with raw DDL (an FTS5 virtual table and its shadow tables on
    SQLite, an expression GIN index on PostgreSQL) and have no portable ORM form, so autogenerate
    would otherwise report them as objects to drop.
    """
    if type_ == "table" and reflected and name and name.startswith(TRAJECTORY_SEARCH_FTS_TABLE):
        return False
    if type_ == "index" and reflected and name == TRAJECTORY_SEARCH_TSV_INDEX:
        return False
    return True


class TrajectoryRow(Base):
    """A stored trajectory: filter columns, a content hash, the protobuf document, search data."""

    __tablename__ = "trajectories"
    __table_args__ = (
        Index("ix_trajectories_tenant_create", "tenant_id", "create_time", "trajectory_id"),
        Index("ix_trajectories_tenant_agent", "tenant_id", "agent_name", "agent_version"),
        Index("ix_trajectories_tenant_job", "tenant_id", "job_id", "create_time", "trajectory_id"),
        Index("ix_trajectories_tenant_group", "tenant_id", "group_id"),
        Index("ix_trajectories_tenant_query", "tenant_id", "query_id"),
        Index("ix_trajectories_tenant_outcome", "tenant_id", "success", "termination_reason"),
        Index("ix_trajectories_tenant_reward", "tenant_id", "reward"),
        # The ids similarity search ranks, read without touching the rows (migration 0009).
        Index("ix_trajectories_tenant_live", "tenant_id", "superseded", "trajectory_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    trajectory_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_name: Mapped[str] = mapped_column(String(200))
    agent_version: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str] = mapped_column(String(128))
    group_id: Mapped[str] = mapped_column(String(128))
    iteration: Mapped[int] = mapped_column(BigInteger())
    query_id: Mapped[str] = mapped_column(String(200))
    success: Mapped[bool | None] = mapped_column(Boolean(), nullable=True)
    termination_reason: Mapped[int] = mapped_column(Integer())
    reward: Mapped[float | None] = mapped_column(Double(), nullable=True)
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger())
    start_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    superseded: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    content_sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the redacted document without its output-only fields: same id + same hash = duplicate."""
    document: Mapped[bytes] = mapped_column(LargeBinary())
    """The full `cohort.api.trajectory.v1.Trajectory`, protobuf binary."""
    search_text: Mapped[str] = mapped_column(Text())
    """Task, messages, tool results and final result, bounded in length: what full-text search sees."""
    embedding: Mapped[bytes] = mapped_column(LargeBinary())
    """float32 vector of the hashing embedder (`cohort.services.collector.embedding`)."""


class TrajectoryLabelRow(Base):
    """One label of a trajectory, for filtering by `key = value`.

    No foreign key to `trajectories`: the store writes a trajectory and its labels in one transaction
    and never rewrites either, and a per-row RI check made label inserts the most expensive part of a
    batch on PostgreSQL (a deleting path must delete the labels with the trajectory).
    """

    __tablename__ = "trajectory_labels"
    __table_args__ = (Index("ix_trajectory_labels_tenant_key_value", "tenant_id", "key", "value"),)

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    trajectory_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


# --- Idempotency (migration 0003) -----------------------------------------------------------------


class IdempotencyRecord(Base):
    """The first response to a mutating request, by (tenant, scope, request id); see
    `cohort.platform.storage.idempotency`."""

    __tablename__ = "idempotency_records"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The RPC, for example `cohort.api.budget.v1.BudgetService.Reserve`."""
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the request without its request id: a reused id with another request is an error."""
    response: Mapped[bytes] = mapped_column(LargeBinary())
    """The response message, protobuf binary."""
    create_time: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


# --- Reward functions (migration 0008) ------------------------------------------------------------
#
# A registration never changes once made (the same name with another definition is ALREADY_EXISTS),
# so a reward process may cache a row for as long as it runs.


class RewardFunctionRow(Base):
    """A custom reward function registered by a tenant: a Python entry point or a remote address."""

    __tablename__ = "reward_functions"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """`python` or `remote` (`cohort.services.reward.store.FunctionKind`)."""
    entry_point: Mapped[str] = mapped_column(String(500))
    address: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


# --- Policies (migration 0004) --------------------------------------------------------------------
#
# A policy row (identity, heads, the latest version) and one immutable row per version. Weights are
# raw float64 little-endian bytes, the heads' vectors one after another in the policy's head order
# (8 bytes a weight, decoded with one `np.frombuffer`); the Adam state after the update that made a
# version is an `OptimizerState` protobuf (packed doubles), so the next update continues from it.


class PolicyRow(Base):
    """A policy: its heads (a `Policy` protobuf holding only `heads`) and its latest version."""

    __tablename__ = "policies"
    __table_args__ = (Index("ix_policies_tenant_create", "tenant_id", "create_time", "policy_id"),)

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    heads: Mapped[bytes] = mapped_column(LargeBinary())
    latest_version: Mapped[int] = mapped_column(BigInteger())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())


class PolicyVersionRow(Base):
    """One immutable version of a policy: weights, their sha256, and the optimizer state that made it."""

    __tablename__ = "policy_versions"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger(), primary_key=True)
    parent_version: Mapped[int] = mapped_column(BigInteger())
    parameters: Mapped[bytes] = mapped_column(LargeBinary())
    parameters_sha256: Mapped[str] = mapped_column(String(64))
    optimizer_state: Mapped[bytes | None] = mapped_column(LargeBinary(), nullable=True)
    """`cohort.api.trainer.v1.OptimizerState`, protobuf binary; NULL for version 1 (fresh Adam)."""
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())


# --- Checkpoints (migration 0005) -----------------------------------------------------------------
#
# One row per committed checkpoint: the row is the commit point of a save (its files are written,
# fsynced and renamed into place first). `manifest` is the manifest exactly as written beside the
# files (JSON: every file's name, size and sha256), so a load verifies the files against the
# database's copy and the on-disk manifest against `manifest_sha256`.


class CheckpointRow(Base):
    """A committed checkpoint of a job; its files live in the blob store under `blob_key`."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        Index("ix_checkpoints_tenant_job_create", "tenant_id", "job_id", "create_time", "checkpoint_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128))
    iteration: Mapped[int] = mapped_column(BigInteger())
    policy_id: Mapped[str] = mapped_column(String(128))
    policy_version: Mapped[int] = mapped_column(BigInteger())
    metrics: Mapped[str] = mapped_column(Text())
    """JSON object of metric name to value."""
    cumulative_cost_micro_usd: Mapped[int] = mapped_column(BigInteger())
    size_bytes: Mapped[int] = mapped_column(BigInteger())
    blob_key: Mapped[str] = mapped_column(String(200), unique=True)
    """Where the files are in the blob store; unique, so start-up can tell committed files from orphans."""
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[bytes] = mapped_column(LargeBinary())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    """Commit time; strictly increasing within a job, so it orders a job's checkpoints."""


# --- Budget (migration 0006) ----------------------------------------------------------------------
#
# Money is integer micro-USD. `budget_reservations` is the ledger of holds (one row per reservation,
# its state moving ACTIVE -> COMMITTED | RELEASED | EXPIRED); what an active hold counts is summed
# from it, so an expired hold stops counting the moment its `expire_time` passes, with no counter to
# fix up. Committed spending is kept as counters, per tenant-month (`budget_months`, whose row is also
# what a PostgreSQL reservation locks) and per job (`budget_jobs`, which also holds the job's limit).


class BudgetTenantLimitRow(Base):
    """A tenant's monthly limit, once set (until then `Settings.default_monthly_limit_micro_usd`)."""

    __tablename__ = "budget_tenant_limits"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    monthly_limit_micro_usd: Mapped[int] = mapped_column(BigInteger())
    """0 means no limit."""
    update_time: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class BudgetMonthRow(Base):
    """A tenant's committed spending in one calendar month (UTC)."""

    __tablename__ = "budget_months"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    """`YYYY-MM`."""
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger(), default=0)


class BudgetJobRow(Base):
    """One job's lifetime limit and committed spending."""

    __tablename__ = "budget_jobs"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    limit_micro_usd: Mapped[int] = mapped_column(BigInteger(), default=0)
    """0 means no job limit (the tenant's still applies)."""
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger(), default=0)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class BudgetReservationRow(Base):
    """Money held for work in progress, and what it finally cost."""

    __tablename__ = "budget_reservations"
    __table_args__ = (
        Index("ix_budget_reservations_tenant_month_state", "tenant_id", "month", "state"),
        Index("ix_budget_reservations_tenant_job_state", "tenant_id", "job_id", "state"),
        Index("ix_budget_reservations_state_expire", "state", "expire_time"),
    )

    reservation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str] = mapped_column(String(128))
    """Empty when the reservation belongs to no job."""
    month: Mapped[str] = mapped_column(String(7))
    """The month (`YYYY-MM`, UTC) the hold and its spending count against: the month it was made."""
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger())
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger(), default=0)
    state: Mapped[int] = mapped_column(Integer())
    """`cohort.api.budget.v1.ReservationState` value."""
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    expire_time: Mapped[datetime] = mapped_column(UtcDateTime())
    finish_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    """When it was committed, released or found expired."""


class BudgetModelUsageRow(Base):
    """Committed token counts by tenant, month, job and model."""

    __tablename__ = "budget_model_usage"

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger(), default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger(), default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger(), default=0)
    cache_creation_input_tokens: Mapped[int] = mapped_column(BigInteger(), default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger(), default=0)


# --- Jobs (migration 0007) ------------------------------------------------------------------------
#
# One row per job. The row is the truth: the job's state, the spec and progress (protobuf binary), a
# revision that increases with every change (what `WatchJob` orders by), and the lease of the worker
# running it: `lease_owner` and `lease_expires_at`, renewed by heartbeats, and `fencing_token`,
# incremented on every claim, which every progress write must match.


class JobRow(Base):
    """A training job: lifecycle state, spec, progress, and the lease of the worker running it."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_create", "tenant_id", "create_time", "job_id"),
        Index("ix_jobs_tenant_state_create", "tenant_id", "state", "create_time", "job_id"),
        Index("ix_jobs_state_lease", "state", "lease_expires_at"),
        Index("ix_jobs_lease_owner", "lease_owner"),
    )

    tenant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[int] = mapped_column(Integer())
    """A `cohort.api.jobs.v1.Job.State` value."""
    pause_reason: Mapped[int] = mapped_column(Integer())
    pause_requested: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    cancel_requested: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    spec: Mapped[bytes] = mapped_column(LargeBinary())
    """The validated `JobSpec` with defaults filled in, protobuf binary."""
    progress: Mapped[bytes] = mapped_column(LargeBinary())
    """The `JobProgress`, protobuf binary."""
    error: Mapped[bytes | None] = mapped_column(LargeBinary(), nullable=True)
    """The `google.rpc.Status` of a FAILED job, protobuf binary."""
    revision: Mapped[int] = mapped_column(BigInteger())
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    fencing_token: Mapped[int] = mapped_column(BigInteger())
    create_time: Mapped[datetime] = mapped_column(UtcDateTime())
    update_time: Mapped[datetime] = mapped_column(UtcDateTime())
    start_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
