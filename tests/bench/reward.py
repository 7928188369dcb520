"""Speed of `ScoreGroups` through gRPC against an in-process suite (reward service only).

16 groups of 8 trajectories, each with 5 agent steps (a tool call and its result per step) and 10
decisions, given in full in the request (~370 KiB). The headline figure uses the default reward (the
outcome, GRPO normalization, Flow-GRPO broadcast), what a training job sends; the second weights every
built-in term (outcome, tool usage, verification, length penalty) and uses discounted per-step
returns. Each figure is the median wall time of one call from the client, after a warm-up.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # bench/, tests/

from figures import Figure, percentile  # noqa: E402
from trajectory_store import make_trajectory  # noqa: E402

from cohort.api.reward.v1 import reward_pb2 as rpb  # noqa: E402
from cohort.api.reward.v1 import reward_pb2_grpc  # noqa: E402
from cohort.platform.config import Settings  # noqa: E402
from cohort.platform.event_loop import run_event_loop  # noqa: E402
from cohort.services.suite import start_suite  # noqa: E402

GROUPS = 16
GROUP_SIZE = 8
DECISIONS = 10
CALLS = 200


def make_request(*, all_terms: bool = False) -> rpb.ScoreGroupsRequest:
    """The default reward (the outcome) broadcast to every decision, or with `all_terms` every built-in
    term weighted and discounted per-step returns (every step carries a reward)."""
    request = rpb.ScoreGroupsRequest()
    if all_terms:
        request.reward.CopyFrom(
            rpb.RewardSpec(
                outcome_weight=1.0,
                tool_usage_weight=0.2,
                verification_weight=0.1,
                length_penalty_weight=0.1,
                step_budget=4,
                token_budget=10_000,
            )
        )
        request.advantage.CopyFrom(
            rpb.AdvantageConfig(credit_assignment=rpb.CREDIT_ASSIGNMENT_DISCOUNTED_RETURNS, gamma=0.95)
        )
    for g in range(GROUPS):
        group = request.groups.add(group_id=f"group-{g}")
        for k in range(GROUP_SIZE):
            i = g * GROUP_SIZE + k
            t = make_trajectory(i)
            t.trajectory_id = f"bench-{i}"
            t.success = (i * 7919) % 3 == 0
            for extra in range(DECISIONS - len(t.decisions)):
                decision = t.decisions.add(head="next_tool", options=["a", "b", "c"], chosen_index=1)
                decision.chosen, decision.log_prob, decision.step_number = "b", -1.1, 1 + extra % 5
            for step in t.agent_steps:
                step.step_reward = 0.01 * step.step_number
            group.trajectories.append(t)
    return request


async def _time_calls(stub, request: rpb.ScoreGroupsRequest, calls: int) -> list[float]:
    for _ in range(20):
        await stub.ScoreGroups(request, timeout=30)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        response = await stub.ScoreGroups(request, timeout=30)
        samples.append(time.perf_counter() - started)
    assert len(response.groups) == GROUPS
    assert all(len(t.decision_advantages) == DECISIONS for t in response.groups[0].trajectories)
    return samples


async def measure(calls: int = CALLS) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = await start_suite(Settings(data_dir=Path(tmp) / "var"), ["reward"], ephemeral_ports=True)
        try:
            stub = reward_pb2_grpc.RewardServiceStub(suite.context.channels.channel("reward"))
            results: dict[str, float] = {}
            for name, request in (("default", make_request()), ("all_terms", make_request(all_terms=True))):
                samples = await _time_calls(stub, request, calls)
                results[f"{name}_median_ms"] = statistics.median(samples) * 1000
                results[f"{name}_p95_ms"] = percentile(samples, 95) * 1000
                results[f"{name}_request_kib"] = request.ByteSize() / 1024
            return results
        finally:
            await suite.stop(0)


def figures() -> list[Figure]:
    result = run_event_loop(measure())
    print(
        f"  request {result['default_request_kib']:.0f} KiB; p95 {result['default_p95_ms']:.2f} ms "
        f"(default reward), {result['all_terms_p95_ms']:.2f} ms (all built-in terms, discounted returns)"
    )
    every_term = result["all_terms_median_ms"]
    return [
        Figure("ScoreGroups, 16 groups x 8 trajectories, median", result["default_median_ms"], "ms", 10.0),
        Figure("  the same, all built-in terms, discounted returns", every_term, "ms", 10.0),
    ]


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
