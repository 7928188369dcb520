"""GRPO update: `grpo_update` on a batch the size of one job iteration, alone and through gRPC.

128 trajectories x 10 decisions, each decision with 8 options and 10 context features (11 hashed
slots per option with its bias), 4096 buckets, 4 inner epochs, KL and entropy terms on (the most work
an update does).

- the math: the batch is built once, as `encode_batch` would build it; the figure is the median
  time of `grpo_update` alone.
- the RPC: `TrainerService.UpdatePolicy` on the in-process suite (SQLite), with the same shape of
  batch as real recorded decisions (made by the policy itself); each call also validates the
  trajectories, encodes them, stores the new version and its optimizer state.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from figures import Figure, median_seconds  # noqa: E402

from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc  # noqa: E402
from cohort.api.trajectory.v1 import trajectory_pb2  # noqa: E402
from cohort.learning import AdamState, DecisionBatch, GrpoSettings, HeadBatch, grpo_update  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.policy import PolicySnapshot  # noqa: E402
from cohort.sdk.runtime import DecisionRequest  # noqa: E402

TRAJECTORIES, DECISIONS, OPTIONS, FEATURES, BUCKETS = 128, 10, 8, 10, 4096
REPEATS = 21
RPC_REPEATS = 11


def make_update_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    count = TRAJECTORIES * DECISIONS
    slots = FEATURES + 1
    batch = DecisionBatch(
        indices=rng.integers(0, BUCKETS, size=(count, OPTIONS, slots)),
        values=np.concatenate(
            [np.ones((count, OPTIONS, 1)), rng.normal(size=(count, OPTIONS, FEATURES))], axis=2
        ),
        option_mask=np.ones((count, OPTIONS), dtype=bool),
        chosen=rng.integers(0, OPTIONS, size=count),
        temperature=1.0,
    )
    weights = {"next_tool": rng.normal(scale=0.1, size=BUCKETS)}
    old_log_prob = np.full(count, -np.log(OPTIONS)) + rng.normal(scale=0.1, size=count)
    old_log_prob = np.minimum(old_log_prob, 0.0)
    # Flow-GRPO: one advantage per trajectory, broadcast to its decisions.
    advantage = np.repeat(rng.normal(size=TRAJECTORIES), DECISIONS)
    batches = {"next_tool": HeadBatch(batch, old_log_prob, advantage, np.zeros(BUCKETS))}
    return weights, batches


def measure() -> float:
    """Median wall seconds of one `grpo_update`; also prints the median CPU seconds, which on a busy
    shared machine say more about the code than wall time does (the update is single-threaded)."""
    weights, batches = make_update_inputs()
    settings = GrpoSettings(inner_epochs=4, kl_beta=0.04, entropy_coefficient=0.01)
    optimizer = AdamState.zeros(weights)
    grpo_update(weights, batches, optimizer, settings)  # warm-up
    cpu = []

    def run() -> None:
        started = time.process_time()
        grpo_update(weights, batches, optimizer, settings)
        cpu.append(time.process_time() - started)

    wall = median_seconds(run, REPEATS)
    print(f"  grpo_update: median CPU time {statistics.median(cpu) * 1000:.1f} ms")
    return wall


def _trajectories(snapshot: PolicySnapshot, seed: int = 0) -> list[trajectory_pb2.Trajectory]:
    """Trajectories whose decisions the policy itself made, with a Flow-GRPO advantage each."""
    rng = np.random.default_rng(seed)
    options = [f"tool_{i}" for i in range(OPTIONS)]
    trajectories = []
    for t in range(TRAJECTORIES):
        decisions = []
        for d in range(DECISIONS):
            features = {f"feature_{k}": float(rng.normal()) for k in range(FEATURES)}
            request = DecisionRequest("next_tool", features, options, seed=t * 1000 + d)
            decisions.append(snapshot.decide(request))
        trajectories.append(
            trajectory_pb2.Trajectory(
                trajectory_id=f"trajectory-{t}",
                group_id=f"group-{t // 8}",
                policy=trajectory_pb2.PolicyRef(policy_id=snapshot.policy_id, version=snapshot.version),
                decisions=decisions,
                advantage=float(rng.normal()),
            )
        )
    return trajectories


async def _measure_rpc() -> float:
    from cohort.services.suite import start_suite

    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp)), ["trainer"], ephemeral_ports=True)
        try:
            stub = trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))
            head = trainer_pb2.DecisionHead(name="next_tool", feature_buckets=BUCKETS)
            created = await stub.CreatePolicy(trainer_pb2.CreatePolicyRequest(heads=[head]), timeout=30)
            fetched = await stub.GetPolicy(
                trainer_pb2.GetPolicyRequest(policy_id=created.policy.policy_id, include_parameters=True)
            )
            trajectories = _trajectories(PolicySnapshot.from_proto(fetched.policy))
            # Every call updates the latest version from the same version-1 trajectories.
            config = trainer_pb2.GrpoConfig(
                inner_epochs=4, kl_beta=0.04, entropy_coefficient=0.01, max_policy_staleness=RPC_REPEATS + 2
            )
            version, times = 1, []
            for _ in range(RPC_REPEATS + 1):  # the first call is a warm-up
                request = trainer_pb2.UpdatePolicyRequest(
                    policy_id=created.policy.policy_id,
                    base_version=version,
                    trajectories=trajectories,
                    config=config,
                )
                started = time.perf_counter()
                response = await stub.UpdatePolicy(request, timeout=60)
                times.append(time.perf_counter() - started)
                assert response.metrics.decisions == TRAJECTORIES * DECISIONS, response
                version = response.policy.version
            return statistics.median(times[1:])
        finally:
            await suite.stop(0)


def measure_rpc() -> float:
    return run_event_loop(_measure_rpc())


def figures() -> list[Figure]:
    return [
        Figure(
            "UpdatePolicy math, 128 traj x 10 decisions x 8 options, 4 epochs, median",
            measure() * 1000,
            "ms",
            20,
        ),
        Figure(
            "UpdatePolicy RPC (in-process suite, SQLite), same batch, median",
            measure_rpc() * 1000,
            "ms",
            20,
        ),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
