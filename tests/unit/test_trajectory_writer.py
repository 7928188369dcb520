"""The collector's group-commit writer never strands a write: a write that arrives as the last
drainer finishes (before the drainer's task has left the writer's set) still gets stored."""

from __future__ import annotations

import asyncio

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.services.collector.collection import TrajectoryWriter
from cohort.services.collector.store import IngestItemResult, IngestResult, ItemStatus


class _Store:
    """Stands in for the database; on its first ingest it starts another write that runs right after
    the drainer's last step and before the drainer's done callback (the window of the race)."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.on_first_ingest = None

    async def ingest(self, tenant_id, trajectories):
        await asyncio.sleep(0)
        self.stored += [t.trajectory_id for t in trajectories]
        if self.on_first_ingest is not None:
            start, self.on_first_ingest = self.on_first_ingest, None
            start()  # its first step is queued before the drainer finishes: it runs in the window
        return IngestResult(
            items=[
                IngestItemResult(index=i, trajectory_id=t.trajectory_id, status=ItemStatus.STORED)
                for i, t in enumerate(trajectories)
            ]
        )


async def test_a_write_arriving_as_the_only_drainer_finishes_is_stored():
    store = _Store()
    writer = TrajectoryWriter(store, writers=1)  # type: ignore[arg-type]
    second: list[asyncio.Task] = []
    store.on_first_ingest = lambda: second.append(
        asyncio.ensure_future(writer.write("t", [trajectory_pb2.Trajectory(trajectory_id="late")]))
    )
    first = await asyncio.wait_for(writer.write("t", [trajectory_pb2.Trajectory(trajectory_id="first")]), 5)
    assert [item.trajectory_id for item in first] == ["first"]
    late = await asyncio.wait_for(second[0], 5)  # stranded forever before the fix
    assert [item.trajectory_id for item in late] == ["late"]
    assert store.stored == ["first", "late"]
