"""Collection: `CollectGroup` on the in-process suite (embedded SQLite), against bare rollouts.

1. parallel efficiency: a group of 8 rollouts of 5 steps x 200 ms simulated latency against one
   such rollout, both through `CollectGroup` (ideal 1.0: the group runs side by side).
2. collection overhead: the same toolbench rollouts (same policy version, query and seeds) run bare
   (the agent and a `LocalDecider` in this process, no recorder, no store, no RPC) and through
   `CollectGroup` (recorded, stored, streamed over gRPC), 15 ms simulated latency per step, i.e. a
   fast LLM call: the ratio of the wall time of whole groups, summed over several queries.
3. throughput: toolbench rollouts (no latency) collected, recorded and stored, with 8 `CollectGroup`
   calls of 8 rollouts in flight at a time.

The policy version is pinned (`version` set), as a training job does, so its snapshot comes from the
collector's cache after the first group.

Run as a script it also prints the CPU time (`time.process_time`, all threads) per toolbench rollout,
no latency, of its three parts: bare (agent + `LocalDecider`), recorded (the collector's in-memory
recorder, trajectory built), stored (`TrajectoryStore.ingest` of those trajectories, 64 a batch).
On a shared machine compare these within one run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # bench/, tests/

from figures import Figure  # noqa: E402
from google.protobuf.duration_pb2 import Duration  # noqa: E402

from cohort.api.collector.v1 import collector_pb2 as cpb  # noqa: E402
from cohort.api.collector.v1 import collector_pb2_grpc  # noqa: E402
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc  # noqa: E402
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.policy import LocalDecider, PolicySnapshot  # noqa: E402
from cohort.sdk import toolbench  # noqa: E402
from cohort.sdk.runtime import AgentContext  # noqa: E402
from cohort.services.suite import start_suite  # noqa: E402

COMPONENTS = ["collector", "trainer"]  # no job runner polling the same SQLite file
GROUP = 8
OVERHEAD_LATENCY = 0.015
OVERHEAD_QUERIES = 12
THROUGHPUT_GROUPS = 64
IN_FLIGHT = 8
RUNS = 3


async def _collect(stub, request) -> list[cpb.CollectGroupResponse]:
    return [response async for response in stub.CollectGroup(request, timeout=120)]


async def _timed(coroutine) -> float:
    started = time.perf_counter()
    await coroutine
    return time.perf_counter() - started


async def _parallel_efficiency(stub) -> float:
    runtime = cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point="agents.python_agents:latency_agent"))
    query = cpb.Query(query_id="latency", text="wait", payload_json=json.dumps({"steps": 5, "latency": 0.2}))
    ratios = []
    for _ in range(RUNS):
        one = await _timed(
            _collect(stub, cpb.CollectGroupRequest(runtime=runtime, query=query, group_size=1))
        )
        eight = await _timed(
            _collect(stub, cpb.CollectGroupRequest(runtime=runtime, query=query, group_size=GROUP))
        )
        ratios.append(eight / one)
    return statistics.median(ratios)


async def _bare_group(snapshot, query, options, seed: int) -> None:
    agent = toolbench.make_agent(options)
    task = toolbench.task_from_query(query)
    decider = LocalDecider(snapshot)

    async def rollout(i: int) -> None:
        await agent(task, AgentContext(task, decider=decider, seed=seed + i, policy=tpb.PolicyRef()))

    await asyncio.gather(*(rollout(i) for i in range(GROUP)))


async def _overhead(stub, trainer, policy: tpb.PolicyRef) -> float:
    got = await trainer.GetPolicy(
        trainer_pb2.GetPolicyRequest(
            policy_id=policy.policy_id, version=policy.version, include_parameters=True
        )
    )
    snapshot = PolicySnapshot.from_proto(got.policy)
    options = toolbench.ToolbenchOptions(step_latency_seconds=OVERHEAD_LATENCY)
    runtime = cpb.RuntimeSpec(
        toolbench=cpb.ToolbenchRuntime(simulated_step_latency=Duration(nanos=int(OVERHEAD_LATENCY * 1e9)))
    )
    queries = toolbench.generate_queries("train", OVERHEAD_QUERIES, seed=7)
    ratios = []
    for run in range(RUNS):
        bare = collected = 0.0
        for i, query in enumerate(queries):
            seed = 1000 * run + 10 * i
            request = cpb.CollectGroupRequest(
                runtime=runtime, query=query, policy=policy, seed=seed, group_size=GROUP
            )
            collected += await _timed(_collect(stub, request))
            bare += await _timed(_bare_group(snapshot, query, options, seed))
        ratios.append(collected / bare)
    return statistics.median(ratios)


async def _throughput(stub, policy: tpb.PolicyRef) -> float:
    runtime = cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime())
    queries = toolbench.generate_queries("train", THROUGHPUT_GROUPS, seed=11)
    limit = asyncio.Semaphore(IN_FLIGHT)
    stored = 0

    async def group(i: int, query) -> None:
        nonlocal stored
        async with limit:
            request = cpb.CollectGroupRequest(
                runtime=runtime, query=query, policy=policy, seed=i * GROUP, group_size=GROUP
            )
            responses = await _collect(stub, request)
            stored += len(responses)

    rates = []
    for _ in range(RUNS):
        stored = 0
        seconds = await _timed(asyncio.gather(*(group(i, q) for i, q in enumerate(queries))))
        assert stored == THROUGHPUT_GROUPS * GROUP, stored
        rates.append(stored / seconds)
    return statistics.median(rates)


async def _measure() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp)), COMPONENTS, ephemeral_ports=True)
        try:
            stub = collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))
            trainer = trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))
            created = await trainer.CreatePolicy(
                trainer_pb2.CreatePolicyRequest(policy_id="bench", heads=toolbench.policy_heads())
            )
            policy = tpb.PolicyRef(policy_id="bench", version=created.policy.version)
            await _collect(
                stub,
                cpb.CollectGroupRequest(
                    runtime=cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime()),
                    query=toolbench.generate_queries("train", 1)[0],
                    policy=policy,
                ),
            )  # warm-up: imports, snapshot cache, database
            efficiency = await _parallel_efficiency(stub)
            overhead = await _overhead(stub, trainer, policy)
            rate = await _throughput(stub, policy)
        finally:
            await suite.stop(0)
    return [
        Figure(
            "parallel efficiency: group of 8, 5 steps x 200 ms simulated latency (ratio to one rollout)",
            efficiency,
            "x",
            1.15,
        ),
        Figure(
            "collection overhead: CollectGroup recorded+stored vs bare rollouts, 15 ms/step (ratio)",
            overhead,
            "x",
            1.10,
        ),
        Figure("toolbench rollouts collected and stored, no latency", rate, "/s", 500, lower_is_better=False),
    ]


def figures() -> list[Figure]:
    return run_event_loop(_measure())


CPU_GROUPS = 40


async def _cpu_breakdown() -> dict[str, float]:
    """CPU seconds per rollout of the bare, recorded and stored parts of a toolbench rollout."""
    import numpy as np

    from cohort.platform.storage import open_database
    from cohort.policy.snapshot import HeadSpec
    from cohort.sdk.trajectories.usage import PriceTable
    from cohort.services.collector.collection import plan_group
    from cohort.services.collector.runtimes import RuntimeResolver
    from cohort.services.collector.store import TrajectoryStore

    heads = {head.name: HeadSpec.from_proto(head) for head in toolbench.policy_heads()}
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(0, 0.3, head.feature_buckets) for name, head in heads.items()}
    decider = LocalDecider(PolicySnapshot("bench", 1, heads, weights))
    policy = tpb.PolicyRef(policy_id="bench", version=1)
    runtime = cpb.RuntimeSpec(toolbench=cpb.ToolbenchRuntime())
    queries = toolbench.generate_queries("train", CPU_GROUPS, seed=5)
    settings = Settings()
    runner = RuntimeResolver(PriceTable.load(None)).resolve(runtime, settings=settings, caller_api_key="")
    agent = toolbench.make_agent(toolbench.ToolbenchOptions())

    async def bare() -> None:
        for i, query in enumerate(queries):
            task = toolbench.task_from_query(query)
            for j in range(GROUP):
                context = AgentContext(task, decider=decider, seed=i * GROUP + j, policy=tpb.PolicyRef())
                await agent(task, context)

    async def recorded() -> list[tpb.Trajectory]:
        out = []
        for i, query in enumerate(queries):
            request = cpb.CollectGroupRequest(
                runtime=runtime, query=query, policy=policy, seed=i * GROUP, group_size=GROUP
            )
            plan = plan_group(request, settings)
            task = runner.task_of(query)
            for j in range(GROUP):
                rollout = plan.rollout(j, runner, task, policy)
                recording = runner.recording(rollout)
                await runner.run(rollout, recording, decider)
                out.append(recording.trajectory())
        return out

    count = len(queries) * GROUP
    await bare()  # warm-up: caches, imports
    await recorded()
    started = time.process_time()
    await bare()
    bare_cpu = (time.process_time() - started) / count
    started = time.process_time()
    trajectories = await recorded()
    recorded_cpu = (time.process_time() - started) / count
    with tempfile.TemporaryDirectory() as tmp:
        database = await open_database(Settings(data_dir=Path(tmp)))
        try:
            store = TrajectoryStore(database)
            await store.ingest("warm-up", trajectories[:GROUP])
            started = time.process_time()
            for start in range(0, len(trajectories), 64):
                await store.ingest("bench", trajectories[start : start + 64])
            stored_cpu = (time.process_time() - started) / count
        finally:
            await database.close()
    return {"bare": bare_cpu, "recorded": recorded_cpu, "stored": stored_cpu}


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
    cpu = run_event_loop(_cpu_breakdown())
    print(
        "CPU per toolbench rollout, no latency: "
        + ", ".join(f"{part} {seconds * 1e3:.2f} ms" for part, seconds in cpu.items())
        + f" (recorded / bare {cpu['recorded'] / cpu['bare']:.2f}x)"
    )
