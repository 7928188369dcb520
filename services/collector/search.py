"""Searching trajectories: the query and its filter, page tokens, similarity ranking.

- Filters and full text are SQL, in `store` (filters on the indexed columns, full text with every
  word of the query matching).
- Similarity: exact cosine over the hashing embedder's vectors of the filtered rows, in NumPy, off
  the event loop. Stored embeddings never change (a stored trajectory is never overwritten), so an
  in-process `EmbeddingCache` keyed by (tenant, id) needs no invalidation and is correct across
  replicas; only rows it has not seen are read from the database.
- Paging is keyset paging: the token carries the last hit's sort key (create time and id, or score
  and id) and a fingerprint of the query, so a token used with other filters is `InvalidArgument`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform import paging
from cohort.platform.errors import InvalidArgument
from cohort.services.collector import embedding

_KNOWN_TERMINATION = frozenset(trajectory_pb2.TerminationReason.values())


class View(Enum):
    BASIC = 1
    """Metadata, outcome, reward and usage; no llm_interactions, agent_steps or decisions."""
    FULL = 2


@dataclass(frozen=True)
class TrajectoryFilter:
    """Every set field must match. `created_*` bound the time Cohort stored the trajectory."""

    agent_name: str = ""
    agent_version: str = ""
    job_id: str = ""
    group_id: str = ""
    iteration: int | None = None
    success: bool | None = None
    termination_reasons: tuple[int, ...] = ()
    min_reward: float | None = None
    max_reward: float | None = None
    created_after: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Exclusive."""
    labels: tuple[tuple[str, str], ...] = ()
    include_superseded: bool = False

    def fingerprint(self) -> list[Any]:
        return [
            self.agent_name,
            self.agent_version,
            self.job_id,
            self.group_id,
            self.iteration,
            self.success,
            sorted(set(self.termination_reasons)),
            self.min_reward,
            self.max_reward,
            self.created_after.isoformat() if self.created_after else None,
            self.created_before.isoformat() if self.created_before else None,
            sorted(self.labels),
            self.include_superseded,
        ]


@dataclass(frozen=True)
class SearchQuery:
    filter: TrajectoryFilter = field(default_factory=TrajectoryFilter)
    text_query: str = ""
    """Full text: every word must occur (stemmed)."""
    similar_to_text: str = ""
    similar_to_trajectory_id: str = ""
    page_size: int = 0
    """1 to 1000; 0 means the default (50)."""
    page_token: str = ""
    view: View = View.BASIC


def validate_filter(f: TrajectoryFilter, prefix: str = "filter") -> None:
    for i, reason in enumerate(f.termination_reasons):
        if reason not in _KNOWN_TERMINATION or reason == 0:
            raise InvalidArgument(
                f"{prefix}.termination_reasons[{i}]", f"unknown or unspecified value {reason}"
            )
    for name in ("min_reward", "max_reward"):
        value = getattr(f, name)
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{prefix}.{name}", "must be a finite number")
    if f.min_reward is not None and f.max_reward is not None and f.min_reward > f.max_reward:
        raise InvalidArgument(f"{prefix}.min_reward", "is greater than max_reward")
    if f.created_after and f.created_before and f.created_after > f.created_before:
        raise InvalidArgument(f"{prefix}.start_time", "is after end_time")
    for key, _ in f.labels:
        if not key:
            raise InvalidArgument(f"{prefix}.labels", "a label key is empty")


# --- Page tokens ----------------------------------------------------------------------------------


def _token_scope(query: SearchQuery) -> list[Any]:
    return [
        query.filter.fingerprint(),
        query.text_query,
        query.similar_to_text,
        query.similar_to_trajectory_id,
    ]


def encode_page_token(query: SearchQuery, key: list[Any]) -> str:
    return paging.encode_page_token(_token_scope(query), key)


def _bad_token() -> InvalidArgument:
    return InvalidArgument("page_token", "is not a token this search returned")


def decode_page_token(query: SearchQuery) -> list[Any] | None:
    """The keyset position a token carries; `InvalidArgument("page_token")` for a bad or foreign one."""
    key = paging.decode_page_token(query.page_token, _token_scope(query))
    if key is not None and len(key) != 2:
        raise _bad_token()
    return key


def time_key(after: list[Any]) -> tuple[datetime, str]:
    try:
        moment = datetime.fromisoformat(after[0])
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, str(after[1])
    except (TypeError, ValueError) as exc:
        raise _bad_token() from exc


def ranked_key(after: list[Any]) -> tuple[float, str]:
    try:
        score = float(after[0])
        if not math.isfinite(score):
            raise ValueError("score")
        return score, str(after[1])
    except (TypeError, ValueError) as exc:
        raise _bad_token() from exc


# --- Similarity -----------------------------------------------------------------------------------


@dataclass
class SimilaritySnapshot:
    ids: list[str]
    matrix: np.ndarray
    """The cache's matrix (every cached row, of every tenant)."""
    positions: np.ndarray
    """Row of `matrix` for each id."""


class EmbeddingCache:
    """Embeddings by (tenant, trajectory id) in one growing float32 matrix.

    Mutated only on the event loop; a `snapshot` handed to a worker thread keeps its own references,
    so appends (or a reset when `max_rows` is reached) never disturb a ranking in progress.
    """

    def __init__(self, max_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self._count = 0
        self._rows: dict[str, dict[str, int]] = {}
        self._matrix = np.zeros((1024, embedding.DIMENSIONS), dtype=np.float32)

    def __len__(self) -> int:
        return self._count

    def lookup(self, tenant_id: str, ids: Sequence[str]) -> tuple[list[int | None], list[str]]:
        """The cached row of each id (None when not cached) and the ids not cached."""
        rows = list(map(self._rows.get(tenant_id, {}).get, ids))
        missing = [tid for tid, row in zip(ids, rows, strict=True) if row is None] if None in rows else []
        return rows, missing

    def add_many(self, tenant_id: str, items: Sequence[tuple[str, bytes]]) -> None:
        tenant_rows = self._rows.setdefault(tenant_id, {})
        for tid, blob in items:
            if tid in tenant_rows:
                continue
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape != (embedding.DIMENSIONS,):
                continue
            if self._count >= self.max_rows:
                self._rows = {}
                tenant_rows = self._rows.setdefault(tenant_id, {})
                self._matrix = np.zeros_like(self._matrix)
                self._count = 0
            row = self._count
            if row >= self._matrix.shape[0]:
                grown = np.zeros((self._matrix.shape[0] * 2, embedding.DIMENSIONS), dtype=np.float32)
                grown[:row] = self._matrix[:row]
                self._matrix = grown
            self._matrix[row] = vector
            tenant_rows[tid] = row
            self._count += 1

    def snapshot(
        self, tenant_id: str, ids: Sequence[str], cached_rows: list[int | None] | None = None
    ) -> SimilaritySnapshot:
        """The cached rows of `ids` (ids not cached, e.g. after a reset, are left out). `cached_rows`:
        what `lookup` found for `ids` when it found every one and nothing was added since."""
        rows, missing = (cached_rows, []) if cached_rows is not None else self.lookup(tenant_id, ids)
        if missing:
            kept = [(tid, row) for tid, row in zip(ids, rows, strict=True) if row is not None]
            ids = [tid for tid, _ in kept]
            rows = [row for _, row in kept]
        return SimilaritySnapshot(list(ids), self._matrix[: self._count], np.asarray(rows, dtype=np.int64))


def rank_by_similarity(
    snapshot: SimilaritySnapshot,
    vector: np.ndarray,
    after: tuple[float, str] | None,
    limit: int,
) -> list[tuple[str, float]]:
    """(id, cosine) of the best `limit` rows after the keyset position, best first, ties by id.

    Scores every cached row with one matrix-vector product (cheaper than gathering the selected rows
    first), then picks the selected ones; only the best candidates are sorted.
    """
    if not snapshot.ids:
        return []
    scores = (snapshot.matrix @ vector.astype(np.float32))[snapshot.positions].astype(np.float64)
    candidates = np.arange(len(scores))
    if after is not None:
        after_score, after_id = after
        below = scores < after_score
        tied = np.flatnonzero(scores == after_score)
        if len(tied):
            below[[i for i in tied if snapshot.ids[i] > after_id]] = True
        candidates = np.flatnonzero(below)
    if len(candidates) == 0:
        return []
    if len(candidates) > limit:
        # Keep the best `limit` and every row tied with the cut-off, so ties are broken by id.
        cut = np.partition(scores[candidates], len(candidates) - limit)[len(candidates) - limit]
        candidates = candidates[scores[candidates] >= cut]
    ids = snapshot.ids
    order = sorted(candidates.tolist(), key=lambda i: (-scores[i], ids[i]))[:limit]
    return [(ids[i], float(scores[i])) for i in order]
