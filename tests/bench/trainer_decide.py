"""Bench: `TrainerService.Decide` over gRPC, one client process against the suite in another process.

The server is `cohort serve trainer` started as a subprocess on a fresh data directory (SQLite, port
0, authentication on with the embedded admin key). The client is one asyncio process with one
channel and no client interceptors, as a lean agent runtime would have:

- throughput: `THROUGHPUT_CONCURRENCY` calls kept in flight for `seconds`, decisions per second;
- latency: a second phase with modest concurrency (`LATENCY_CONCURRENCY` in flight), so the p99
  measures the service rather than the depth of a queue we built ourselves.

Each call is a sampled decision (a fresh seed per call) on a 5-option head with 8 context features,
at version 0 (latest), so the latest-version cache and the snapshot LRU are on the measured path.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpc  # noqa: E402
from figures import Figure, percentile  # noqa: E402
from service_process import start_service  # noqa: E402

from cohort.api.trainer.v1 import trainer_pb2 as pb  # noqa: E402
from cohort.api.trainer.v1 import trainer_pb2_grpc  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402

THROUGHPUT_CONCURRENCY = 64
LATENCY_CONCURRENCY = 4
WARMUP_SECONDS = 1.0


async def _phase(
    stub, metadata, request_for, concurrency: int, seconds: float
) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    counter = iter(range(1 << 62))
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            request = request_for(next(counter))
            started = time.perf_counter()
            await stub.Decide(request, metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, time.perf_counter() - started


async def measure(address: str, api_key: str, seconds: float) -> dict[str, float]:
    metadata = (("authorization", f"Bearer {api_key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        created = await stub.CreatePolicy(
            pb.CreatePolicyRequest(
                display_name="bench",
                heads=[
                    pb.DecisionHead(
                        name="next_tool", options=["search", "calc", "lookup", "browse", "answer"]
                    )
                ],
            ),
            metadata=metadata,
            timeout=10,
        )
        features = {f"feature_{i}": float(i) / 8 for i in range(8)}

        def request_for(n: int) -> pb.DecideRequest:
            return pb.DecideRequest(
                policy_id=created.policy.policy_id, head="next_tool", features=features, seed=n
            )

        await _phase(stub, metadata, request_for, THROUGHPUT_CONCURRENCY, WARMUP_SECONDS)
        count, _, elapsed = await _phase(stub, metadata, request_for, THROUGHPUT_CONCURRENCY, seconds)
        _, latencies, _ = await _phase(stub, metadata, request_for, LATENCY_CONCURRENCY, seconds)
    return {
        "decisions_per_second": count / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "latency_calls": len(latencies),
    }


def in_process_decide_microseconds(calls: int = 20_000) -> float:
    """Median-of-3 cost of one seeded `PolicySnapshot.decide` (5 options, 8 features), in microseconds."""
    import numpy as np

    from cohort.policy import HeadSpec, PolicySnapshot
    from cohort.sdk.runtime import DecisionRequest

    head = HeadSpec("next_tool", ("search", "calc", "lookup", "browse", "answer"))
    snapshot = PolicySnapshot(
        "bench", 1, {head.name: head}, {head.name: np.random.default_rng(0).normal(size=4096)}
    )
    features = {f"feature_{i}": float(i) / 8 for i in range(8)}
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for n in range(calls):
            snapshot.decide(DecisionRequest("next_tool", features, seed=n))
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return sorted(runs)[1]


def figures() -> list[Figure]:
    seconds = float(os.environ.get("COHORT_BENCH_DECIDE_SECONDS", "5"))
    with tempfile.TemporaryDirectory() as tmp:
        process, address = start_service("trainer", tmp)
        try:
            api_key = (Path(tmp) / "admin.key").read_text().strip()
            result = run_event_loop(measure(address, api_key, seconds))
        finally:
            process.terminate()
            process.wait(timeout=15)
    started = time.perf_counter()
    for _ in range(1_000_000):
        pass
    loop_ms = (time.perf_counter() - started) * 1000
    print(f"  CPU reference: 1M empty Python loop iterations took {loop_ms:.0f} ms (a free core: ~15-25 ms)")
    print(
        f"  Decide: {THROUGHPUT_CONCURRENCY} in flight for throughput, "
        f"p99 at {LATENCY_CONCURRENCY} in flight "
        f"(p50 {result['p50_ms']:.2f} ms over {result['latency_calls']:.0f} calls)"
    )
    return [
        Figure(
            "Decide in-process (seeded PolicySnapshot.decide)", in_process_decide_microseconds(), "us", 50.0
        ),
        Figure(
            "Decide over gRPC, decisions/s (one client process)",
            result["decisions_per_second"],
            "/s",
            3000,
            False,
        ),
        Figure("Decide over gRPC p99", result["p99_ms"], "ms", 5.0),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
