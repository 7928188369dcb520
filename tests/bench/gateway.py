"""Bench: the gateway in its own process, pinned to one CPU core, in front of the jobs service.

Three processes: `cohort serve jobs` (SQLite, authentication on; jobs run with the idle/tick test
runner of tests/integration/test_gateway_jsonrpc.py, through tests/serve_with_test_runner.py, so no
training competes for the CPU), `cohort serve gateway` pinned with `sched_setaffinity` to one core,
and this process as the HTTP load generator (`http_load.HttpConnection`, one connection per client;
its CPU per request is a fraction of aiohttp's client, which would compete with the services).

- `training.get_status` (JSON-RPC, a GetJob of an existing job), two phases over `CLIENTS` connections:
  throughput, closed loop (each client sends its next request when the last is answered), as
  requests per second of gateway CPU (requests divided by the gateway process's user+system CPU
  seconds over the run, read from /proc; on a machine with few cores the load generator and the jobs
  service compete with the gateway, so wall-clock requests per second understate what one core of
  gateway does; both are printed); then latency, open loop: the clients together send `LATENCY_RATE`
  requests per second (at most half the closed-loop wall-clock rate, so the figure measures service
  time rather than a queue the bench built itself: 200 closed-loop clients alone would make p95 at
  least 200 / rate), p95 over all of them.
- `WatchJob` over HTTP: a job ticking every 20 ms is watched over gRPC (directly at the jobs service)
  and over the gateway's `GET /v1/jobs/{id}:watch` at once; the figure is the p95 of the delay of each
  revision's HTTP line after the same revision on the gRPC stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from figures import Figure, percentile  # noqa: E402
from http_load import HttpConnection  # noqa: E402
from service_process import cpu_seconds, start_service  # noqa: E402

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402

CLIENTS = 200
LATENCY_RATE = 1000.0
WARMUP_SECONDS = 1.0
TESTS_DIR = Path(__file__).parents[1]
SPEC = {
    "runtime": {"toolbench": {}},
    "dataset": {"toolbench": {"train_count": 10, "heldout_count": 5}},
    "policy": {"new_policy": {}},
    "iterations": 3,
}


def start(component: str, data_dir: str, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A service whose jobs run with the idle/tick test runner of the gateway tests."""
    return start_service(
        component,
        data_dir,
        {
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            **extra_env,
        },
        job_runner="integration.test_gateway_jsonrpc:make_runner" if component == "jobs" else "",
    )


async def _rpc(http: aiohttp.ClientSession, method: str, params: dict) -> dict:
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    async with http.post("/jsonrpc", json=body) as response:
        answer = await response.json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


async def _load(
    connections: list[HttpConnection], requests: list[bytes], seconds: float
) -> tuple[list[float], float, int]:
    """Closed loop, a client per connection; client i sends `requests[i % len(requests)]`."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds

    async def client(connection: HttpConnection, request: bytes) -> None:
        nonlocal failures
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status, answer = await connection.send(request)
            if status != 200 or b'"result"' not in answer:
                failures += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(
        *(client(connection, requests[i % len(requests)]) for i, connection in enumerate(connections))
    )
    return latencies, time.perf_counter() - started, failures


async def _paced(
    connections: list[HttpConnection], request: bytes, seconds: float, rate: float
) -> list[float]:
    """Open loop: each client (a connection) sends one request every `len(connections) / rate` seconds."""
    latencies: list[float] = []
    interval = len(connections) / rate

    async def client(connection: HttpConnection, offset: float) -> None:
        next_at = time.perf_counter() + offset
        stop_at = next_at + seconds
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            await connection.send(request)
            latencies.append(time.perf_counter() - started)
            next_at += interval

    await asyncio.gather(*(client(c, i * interval / len(connections)) for i, c in enumerate(connections)))
    return latencies


def _get_status(job_id: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "method": "training.get_status", "params": {"job_id": job_id}, "id": 1}
    ).encode()


async def _start_idle_job(http: aiohttp.ClientSession) -> str:
    return (await _rpc(http, "training.start_grpo", {"spec": SPEC, "display_name": "idle"}))["job"]["jobId"]


async def get_status_figures(base: str, api_key: str, gateway_pid: int, seconds: float) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connections = [await HttpConnection.open(host, int(port)) for _ in range(CLIENTS)]
    async with aiohttp.ClientSession(base, headers=headers) as http:
        job_id = await _start_idle_job(http)
        request = connections[0].post_bytes("/jsonrpc", _get_status(job_id), headers)
        await _load(connections, [request], WARMUP_SECONDS)
        cpu_before = cpu_seconds(gateway_pid)
        loaded, elapsed, failures = await _load(connections, [request], seconds)
        cpu_used = cpu_seconds(gateway_pid) - cpu_before
        rate = min(LATENCY_RATE, 0.5 * len(loaded) / elapsed)
        latencies = await _paced(connections, request, seconds, rate)
        # Each client polling a job of its own: no two requests are alike, so none share a backend call.
        own_jobs = [await _start_idle_job(http) for _ in range(CLIENTS)]
        requests = [connections[0].post_bytes("/jsonrpc", _get_status(own), headers) for own in own_jobs]
        cpu_before = cpu_seconds(gateway_pid)
        distinct, distinct_elapsed, distinct_failures = await _load(connections, requests, seconds)
        distinct_cpu = cpu_seconds(gateway_pid) - cpu_before
        for cancelled in [job_id, *own_jobs]:
            await _rpc(http, "training.cancel", {"job_id": cancelled})
    for connection in connections:
        await connection.close()
    if failures or distinct_failures:
        raise RuntimeError(f"{failures + distinct_failures} get_status calls failed")
    return {
        "distinct_jobs_rps_per_gateway_cpu_second": len(distinct) / max(distinct_cpu, 1e-9),
        "distinct_jobs_wall_rps": len(distinct) / distinct_elapsed,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p50_ms": percentile(latencies, 50) * 1000,
        "latency_rate": rate,
        "closed_loop_p95_ms": percentile(loaded, 95) * 1000,
        "wall_rps": len(loaded) / elapsed,
        # The CPU was read over the closed-loop phase, so its requests are the ones to divide.
        "rps_per_gateway_cpu_second": len(loaded) / max(cpu_used, 1e-9),
        "gateway_cpu_share": cpu_used / elapsed,
        "requests": len(loaded),
    }


async def watch_delay_figures(base: str, jobs_address: str, api_key: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {api_key}"}
    metadata = (("authorization", f"Bearer {api_key}"),)
    grpc_times: dict[int, float] = {}
    http_times: dict[int, float] = {}
    async with aiohttp.ClientSession(base, headers=headers) as http:
        spec = {**SPEC, "iterations": 100}
        job = (await _rpc(http, "training.start_grpo", {"spec": spec, "display_name": "tick"}))["job"]

        async def over_grpc() -> None:
            async with grpc.aio.insecure_channel(jobs_address) as channel:
                stub = jobs_pb2_grpc.JobServiceStub(channel)
                request = jobs_pb2.WatchJobRequest(job_id=job["jobId"])
                async for snapshot in stub.WatchJob(request, metadata=metadata, timeout=120):
                    grpc_times.setdefault(snapshot.job.revision, time.perf_counter())

        async def over_http() -> None:
            async with http.get(f"/v1/jobs/{job['jobId']}:watch") as response:
                async for line in response.content:
                    revision = int(json.loads(line)["result"]["job"]["revision"])
                    http_times.setdefault(revision, time.perf_counter())

        await asyncio.gather(over_grpc(), over_http())
    common = sorted(set(grpc_times) & set(http_times))
    # Both streams start with the current snapshot at different moments; changes start after both opened.
    delays = [http_times[r] - grpc_times[r] for r in common[1:]]
    return {
        "p95_ms": percentile(delays, 95) * 1000,
        "p50_ms": percentile(delays, 50) * 1000,
        "changes": len(delays),
    }


def measure(seconds: float = 5.0) -> tuple[dict[str, float], dict[str, float]]:
    data_dir = tempfile.mkdtemp(prefix="cohort-bench-gateway-")
    # One running job at a time: the per-client jobs of the distinct-jobs phase wait queued, idle.
    jobs, jobs_address = start("jobs", data_dir, {"COHORT_MAX_RUNNING_JOBS": "1"})
    gateway = None
    try:
        gateway, gateway_address = start("gateway", data_dir, {"COHORT_JOBS_ADDRESS": jobs_address})
        # The gateway gets a core of its own; the load generator and the jobs service share the rest, so
        # the scheduler never puts the load generator on the gateway's core (a 2-core machine).
        cores = os.sched_getaffinity(0)
        gateway_core = min(cores)
        os.sched_setaffinity(gateway.pid, {gateway_core})
        if len(cores) > 1:
            for pid in (0, jobs.pid):
                os.sched_setaffinity(pid, cores - {gateway_core})
        api_key = (Path(data_dir) / "admin.key").read_text().strip()
        base = f"http://{gateway_address}"
        status = run_event_loop(get_status_figures(base, api_key, gateway.pid, seconds))
        watch = run_event_loop(watch_delay_figures(base, jobs_address, api_key))
    finally:
        for process in (gateway, jobs):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    return status, watch


def figures(seconds: float = 5.0) -> list[Figure]:
    status, watch = measure(seconds)
    # Reported beside the figures: with no two requests alike nothing is shared, and each request
    # pays a whole grpc.aio call (about 360 µs of client CPU on the 2-core bench machine).
    print(
        f"  get_status with each client polling its own job: "
        f"{status['distinct_jobs_rps_per_gateway_cpu_second']:.0f} per gateway CPU-second "
        f"({status['distinct_jobs_wall_rps']:.0f}/s wall)"
    )
    return [
        Figure(f"gateway: training.get_status p95, {CLIENTS} HTTP clients", status["p95_ms"], "ms", 15.0),
        Figure(
            "gateway: training.get_status per gateway CPU-second (1 core)",
            status["rps_per_gateway_cpu_second"],
            "/s",
            2000.0,
            lower_is_better=False,
        ),
        Figure("gateway: WatchJob HTTP line after gRPC message, p95", watch["p95_ms"], "ms", 100.0),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
