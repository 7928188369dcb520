"""`make bench`: Cohort's speed figures, each printed beside its target.

Figures are measured here, not asserted in unit tests: these machines are shared and noisy, so each
figure is a median over several runs, and ratios are taken within one run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cohort.platform.config import SERVICE_NAMES, Settings
from cohort.platform.event_loop import loop_name, run_event_loop  # noqa: E402
from cohort.platform.rpc.probe import grpc_health
from cohort.services.suite import start_suite

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # bench/, tests/

from figures import Figure  # noqa: E402

RUNS = 5


async def _suite_startup_seconds() -> float:
    """`start_suite` of all seven services on a fresh embedded database, until every one is SERVING."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["all"], ephemeral_ports=True)
        try:
            for name in SERVICE_NAMES[:-1]:
                assert await grpc_health(suite.context.channels.channel(name)) == "SERVING"
            return time.perf_counter() - started
        finally:
            await suite.stop(0)


def _serve_all_process_seconds() -> float:
    """`cohort serve all` as a new process on a fresh data directory, until its ready banner."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_")}
        env["COHORT_DATA_DIR"] = tmp
        for name in SERVICE_NAMES:
            env[f"COHORT_{name.upper()}_PORT"] = "0"
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "cohort.cli", "serve", "all"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            for line in process.stdout:
                if "Ctrl-C or SIGTERM" in line:
                    return time.perf_counter() - started
            raise RuntimeError("cohort serve all exited before it was ready")
        finally:
            process.terminate()
            process.wait(timeout=15)


def _postgres_url() -> str | None:
    """The database the PostgreSQL figures use: COHORT_BENCH_DATABASE_URL, else the test database."""
    url = os.environ.get("COHORT_BENCH_DATABASE_URL") or os.environ.get("COHORT_TEST_DATABASE_URL")
    url = url or "postgresql://postgres@127.0.0.1:5432/test"
    try:
        import asyncpg

        async def probe() -> None:
            connection = await asyncpg.connect(
                url.replace("postgresql+asyncpg://", "postgresql://"), timeout=3
            )
            await connection.close()

        run_event_loop(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    return url


def startup_figures() -> list[Figure]:
    startup = [run_event_loop(_suite_startup_seconds()) for _ in range(RUNS)]
    process = [_serve_all_process_seconds() for _ in range(RUNS)]
    return [
        Figure("suite start-up, 7 services, fresh SQLite (in-process)", statistics.median(startup), "s", 5.0),
        Figure(
            "`cohort serve all` process start to ready (fresh data dir)", statistics.median(process), "s", 5.0
        ),
    ]


def recorder_figures() -> list[Figure]:
    import recorder_overhead

    bare, recorded, ratio = recorder_overhead.measure()
    print(
        f"  recorder: 20-step loop (2 ms per step) bare {bare * 1000:.1f} ms, "
        f"recorded {recorded * 1000:.1f} ms"
    )
    _, _, whole = recorder_overhead.measure_whole_run()
    return [
        Figure("recorder overhead, 20-step loop, journal (ratio)", ratio, "x", 1.05),
        Figure("  the same including finalize (final file written)", whole, "x", 1.05),
    ]


def store_figures(postgres_url: str | None) -> list[Figure]:
    import trajectory_store

    seconds = float(os.environ.get("COHORT_BENCH_INGEST_SECONDS", "30"))
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        sqlite = run_event_loop(trajectory_store.measure_ingest(sqlite_url, seconds))
        figures.append(
            Figure(
                "ingest over gRPC into SQLite, ~2 KB, 5 steps",
                sqlite["trajectories_per_second"],
                "/s",
                2000,
                False,
            )
        )
    if postgres_url is None:
        print(
            "  PostgreSQL figures skipped: no database at COHORT_BENCH_DATABASE_URL/COHORT_TEST_DATABASE_URL"
        )
        return figures
    postgres = run_event_loop(trajectory_store.measure_ingest(postgres_url, seconds))
    figures.append(
        Figure(
            "ingest over gRPC into PostgreSQL, ~2 KB, 5 steps",
            postgres["trajectories_per_second"],
            "/s",
            5000,
            False,
        )
    )
    print(
        f"  raw asyncpg COPY of the same rows: {postgres['copy_per_second']:.0f}/s; "
        f"gRPC ingest / COPY = {postgres['ratio']:.3f}"
    )
    for name, url in (("PostgreSQL", postgres_url), ("SQLite", None)):
        with tempfile.TemporaryDirectory() as tmp:
            target = url or f"sqlite+aiosqlite:///{tmp}/search.db"
            search = run_event_loop(trajectory_store.measure_search(target, 100_000))
        filtered, similar = search["filtered_p95_ms"], search["similarity_p95_ms"]
        figures.append(Figure(f"filtered search, 100k trajectories, {name}, p95", filtered, "ms", 50))
        figures.append(Figure(f"similarity search, 100k trajectories, {name}, p95", similar, "ms", 200))
    return figures


def _module_figures(module: str):
    """The `figures()` of bench module `module` (tests/bench/<module>.py), imported when its group runs."""

    def measure() -> list[Figure]:
        import importlib

        try:
            return importlib.import_module(module).figures()
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            print(f"  {module}: no bench module yet")
            return []

    return measure


def main() -> int:
    only = set(sys.argv[1:])  # e.g. `make bench ARGS=store` runs one group
    groups = {
        "startup": startup_figures,
        "recorder": recorder_figures,
        "store": lambda: store_figures(_postgres_url()),
        "toolbench": _module_figures("toolbench"),
        "collection": _module_figures("collection"),
        "decide": _module_figures("trainer_decide"),
        "update": _module_figures("trainer_update"),
        "reward": _module_figures("reward"),
        "checkpoint": _module_figures("checkpoint"),
        "learning": _module_figures("learning"),
        "jobs": _module_figures("jobs"),
        "gateway": _module_figures("gateway"),
    }
    print(f"Cohort benchmarks ({os.cpu_count()} cores; {loop_name()} event loop; medians unless marked)")
    figures: list[Figure] = []
    for name, measure in groups.items():
        if only and name not in only:
            continue
        print(f"[{name}]")
        group = measure()
        for figure in group:
            print(figure.line())
        figures.extend(group)
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
