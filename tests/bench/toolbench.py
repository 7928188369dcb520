"""toolbench: the agent's own CPU cost per rollout and the reference policies.

Rollout cost: one held-out query answered by `make_agent()` with no latency and no recorder, through
`AgentContext.decide`, with three deciders: the oracle (about 3 decisions per rollout), the uniform
policy (about 4.4, each seeding a NumPy generator) and a zero-weight `cohort.policy.LocalDecider`
(what the collector runs). The figure is the median over `REPEATS` passes of the mean time per
rollout of a pass over `QUERIES` queries, run back to back on one event loop (as a collector runs
them, minus the recording).

Learning itself is measured through the services in `learning.py`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from figures import Figure

from cohort.platform.event_loop import run_event_loop
from cohort.sdk.runtime import AgentContext
from cohort.sdk.toolbench import (
    HEAD,
    generate_queries,
    make_agent,
    oracle_decider,
    policy_heads,
    task_from_query,
    uniform_decider,
)

QUERIES = 500
REPEATS = 5


def _tasks(split: str, count: int, seed: int):
    return [task_from_query(q) for q in generate_queries(split, count, seed=seed)]


def _zero_policy_decider():
    from cohort.policy import HeadSpec, LocalDecider, PolicySnapshot

    head = HeadSpec.from_proto(policy_heads()[0])
    snapshot = PolicySnapshot("bench", 1, {HEAD: head}, {HEAD: np.zeros(head.feature_buckets)})
    return LocalDecider(snapshot)


async def _run_pass(agent, tasks, decider) -> tuple[float, float]:
    """(seconds per rollout, success rate) of one pass over `tasks`."""
    successes = 0
    started = time.perf_counter()
    for i, task in enumerate(tasks):
        context = AgentContext(task, decider=decider, seed=i)
        result = await agent(task, context)
        successes += bool(result.success)
    return (time.perf_counter() - started) / len(tasks), successes / len(tasks)


def rollout_seconds(decider_factory) -> tuple[float, float]:
    """(median seconds per rollout, success rate) over `REPEATS` passes."""
    agent, tasks, decider = make_agent(), _tasks("heldout", QUERIES, 1), decider_factory()

    async def go():
        await _run_pass(agent, tasks[:50], decider)  # warm caches
        return [await _run_pass(agent, tasks, decider) for _ in range(REPEATS)]

    passes = run_event_loop(go())
    return statistics.median(p[0] for p in passes), passes[0][1]


def figures() -> list[Figure]:
    out = []
    oracle_seconds, oracle_success = rollout_seconds(oracle_decider)
    uniform_seconds, uniform_success = rollout_seconds(uniform_decider)
    out.append(
        Figure("toolbench rollout, oracle decider, no recorder (agent CPU)", oracle_seconds * 1e6, "us", 1000)
    )
    out.append(Figure("toolbench rollout, uniform decider, no recorder", uniform_seconds * 1e6, "us", 1000))
    out.append(Figure("toolbench oracle policy held-out success", oracle_success * 100, "%", 95, False))
    out.append(Figure("toolbench uniform policy held-out success", uniform_success * 100, "%", 25))
    try:
        policy_seconds, _ = rollout_seconds(_zero_policy_decider)
    except ImportError:
        return out
    out.append(
        Figure("toolbench rollout, LocalDecider policy, no recorder", policy_seconds * 1e6, "us", 1000)
    )
    out.append(
        Figure("toolbench rollouts/s, LocalDecider, one process", 1 / policy_seconds, "/s", 500, False)
    )
    return out


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
