"""`RecentSnapshots`: the GetJob cache fed by job change fan-out."""

from __future__ import annotations

import time

from cohort.api.jobs.v1 import jobs_pb2
from cohort.services.jobs.watch import RecentSnapshots


def job(job_id: str, revision: int, tenant: str = "t") -> jobs_pb2.Job:
    return jobs_pb2.Job(tenant_id=tenant, job_id=job_id, revision=revision)


def test_newer_revision_replaces_and_older_never_does():
    recent = RecentSnapshots(ttl_seconds=60)
    recent.offer(job("a", 3))
    recent.offer(job("a", 2))  # a slower read of the table arriving after the fan-out
    assert recent.get("t", "a").revision == 3
    recent.offer(job("a", 4))
    assert recent.get("t", "a").revision == 4


def test_snapshots_are_per_tenant():
    recent = RecentSnapshots(ttl_seconds=60)
    recent.offer(job("a", 1, tenant="one"))
    assert recent.get("two", "a") is None
    assert recent.get("one", "a").revision == 1


def test_a_snapshot_is_not_trusted_after_its_ttl(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = RecentSnapshots(ttl_seconds=1.0)
    recent.offer(job("a", 1))
    now[0] += 0.99
    assert recent.get("t", "a") is not None
    now[0] += 0.02
    assert recent.get("t", "a") is None
    recent.offer(job("a", 1))  # a fresh read of the table trusts it again
    assert recent.get("t", "a") is not None


def test_expired_and_oldest_entries_are_evicted(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    recent = RecentSnapshots(ttl_seconds=10.0, max_entries=3)
    for i in range(5):
        recent.offer(job(f"j{i}", 1))
    assert [recent.get("t", f"j{i}") is not None for i in range(5)] == [False, False, True, True, True]
    now[0] += 11
    recent.offer(job("late", 1))
    assert len(recent._entries) == 1
