"""Speed of the checkpoint service: a save and a verified load of a realistic training state.

An in-process suite (the checkpoint service on a fresh embedded SQLite directory, so every save
really writes and fsyncs files) receives `SaveCheckpoint` over gRPC: a 1 MB float32 policy with its
Adam moments (1 MB each) and the JSON training state, about 3 MB in all, encoded once beforehand.
Each save goes through the whole protocol: hashing, files and manifest written and fsynced, rename,
directory fsync, the database commit, and retention (the default, 5 best plus the latest) deleting
older checkpoints. The load figure is `GetLatestCheckpoint` with the files, which reads them back and
verifies every sha256.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from figures import Figure  # noqa: E402

from cohort.api.checkpoint.v1 import checkpoint_pb2 as pb  # noqa: E402
from cohort.api.checkpoint.v1 import checkpoint_pb2_grpc  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.services.checkpoint.state import TrainingState, encode_training_state  # noqa: E402
from cohort.services.suite import start_suite  # noqa: E402

POLICY_BYTES = 1024 * 1024
WARMUP = 3
SAMPLES = 30


def training_state_files() -> list[pb.CheckpointFile]:
    rng = np.random.default_rng(0)
    shape = (POLICY_BYTES // 4 // 256, 256)  # float32: 1 MB of parameters
    params = {"decision_heads/W": rng.standard_normal(shape, dtype=np.float32)}
    state = TrainingState(
        policy_parameters=params,
        optimizer_moments={
            "m": {name: rng.standard_normal(v.shape, dtype=np.float32) for name, v in params.items()},
            "v": {name: rng.random(v.shape, dtype=np.float32) for name, v in params.items()},
        },
        optimizer_step=1200,
        rng_states={"sampler": np.random.default_rng(1).bit_generator.state},
        data_cursor={"epoch": 3, "offset": 4096},
        reward_statistics={"mean": 0.52, "std": 0.21, "count": 9600},
        reference_policy_sha256="0" * 64,
    )
    return encode_training_state(state)


async def measure(samples: int = SAMPLES) -> tuple[list[float], list[float], list[float]]:
    """Seconds per SaveCheckpoint, per verified GetLatestCheckpoint, and the process CPU seconds per
    SaveCheckpoint (client and server, every thread: what the save costs however busy the machine)."""
    files = training_state_files()
    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["checkpoint"], ephemeral_ports=True)
        try:
            stub = checkpoint_pb2_grpc.CheckpointServiceStub(suite.context.channels.channel("checkpoint"))
            saves, loads, cpu = [], [], []
            for i in range(WARMUP + samples):
                request = pb.SaveCheckpointRequest(
                    job_id="bench-job",
                    iteration=i,
                    policy_id="bench-policy",
                    policy_version=i,
                    metrics={"reward_mean": float(np.sin(i))},
                    files=files,
                    cumulative_cost_micro_usd=i * 1000,
                )
                started, cpu_started = time.perf_counter(), time.process_time()
                await stub.SaveCheckpoint(request, timeout=30)
                saved, cpu_saved = time.perf_counter(), time.process_time()
                await stub.GetLatestCheckpoint(
                    pb.GetLatestCheckpointRequest(job_id="bench-job", include_files=True), timeout=30
                )
                loaded = time.perf_counter()
                if i >= WARMUP:
                    saves.append(saved - started)
                    loads.append(loaded - saved)
                    cpu.append(cpu_saved - cpu_started)
            return saves, loads, cpu
        finally:
            await suite.stop(0)


def figures() -> list[Figure]:
    saves, loads, cpu = run_event_loop(measure())
    return [
        Figure(
            "SaveCheckpoint of a 1 MB policy with optimizer state, median incl. fsync",
            statistics.median(saves) * 1000,
            "ms",
            50.0,
        ),
        Figure(
            "  the same save's process CPU time (client+server), median",
            statistics.median(cpu) * 1000,
            "ms",
            50.0,
        ),
        Figure(
            "GetLatestCheckpoint of it with files, sha256-verified, median",
            statistics.median(loads) * 1000,
            "ms",
            50.0,
        ),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
