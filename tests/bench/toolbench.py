"""toolbench: the agent's own CPU cost per rollout, the reference policies, and learnability.

Rollout cost: one held-out query answered by `make_agent()` with no latency and no recorder, through
`AgentContext.decide`, with three deciders: the oracle (about 3 decisions per rollout), the uniform
policy (about 4.4, each seeding a NumPy generator) and a zero-weight `cohort.policy.LocalDecider`
(what the collector runs). The figure is the median over `REPEATS` passes of the mean time per
rollout of a pass over `QUERIES` queries, run back to back on one event loop (as a collector runs
them, minus the recording).

Learnability: the GRPO loop a job runs, in-process: groups of 8 rollouts per train query, 4 queries
per iteration, advantages `(r - mean) / (std + 1e-6)` with all-equal groups dropped, one
`grpo_update` per iteration with the default `GrpoSettings`; the figure is held-out success (sampled,
seeded) after `LEARNING_ROLLOUTS` rollouts minus the uniform policy's, averaged over `LEARNING_SEEDS`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from figures import Figure

from cohort.event_loop import run_event_loop
from cohort.runtime import AgentContext
from cohort.toolbench import (
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
GROUP_SIZE = 8
QUERIES_PER_ITERATION = 4
LEARNING_ROLLOUTS = 320
LEARNING_SEEDS = (1, 2, 3)
EVALUATION_QUERIES = 252


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


def learning_gain(seed: int, rollouts: int = LEARNING_ROLLOUTS) -> tuple[float, float]:
    """(uniform held-out success, held-out success after `rollouts` GRPO training rollouts)."""
    from cohort.policy import HeadSpec, LocalDecider, PolicySnapshot, encode_batch
    from cohort.services.trainer.grpo import AdamState, GrpoSettings, HeadBatch, grpo_update

    agent = make_agent()
    head = HeadSpec.from_proto(policy_heads()[0])
    weights = {HEAD: np.zeros(head.feature_buckets)}
    optimizer = AdamState.zeros(weights)
    settings = GrpoSettings()
    train = _tasks("train", rollouts // GROUP_SIZE + 1, seed)
    heldout = _tasks("heldout", EVALUATION_QUERIES, 1000 + seed)

    async def success_rate(snapshot) -> float:
        decider = LocalDecider(snapshot)
        wins = 0
        for i, task in enumerate(heldout):
            result = await agent(task, AgentContext(task, decider=decider, seed=seed * 100_000 + i))
            wins += bool(result.success)
        return wins / len(heldout)

    async def go() -> tuple[float, float]:
        nonlocal weights, optimizer
        snapshot = PolicySnapshot("bench", 0, {HEAD: head}, dict(weights))
        before = await success_rate(snapshot)
        done = iteration = 0
        while done < rollouts:
            iteration += 1
            decisions, old_log_probs, advantages = [], [], []
            for _ in range(QUERIES_PER_ITERATION):
                task = train[done // GROUP_SIZE]
                decider = LocalDecider(snapshot)
                runs = []
                for member in range(GROUP_SIZE):
                    context = AgentContext(task, decider=decider, seed=seed * 10**7 + done + member)
                    runs.append((await agent(task, context), context.decisions))
                done += GROUP_SIZE
                rewards = np.array([float(bool(result.success)) for result, _ in runs])
                if rewards.std() == 0:
                    continue
                group_advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
                for (_, made), advantage in zip(runs, group_advantages, strict=True):
                    for decision in made:
                        decisions.append(decision)
                        old_log_probs.append(decision.log_prob)
                        advantages.append(advantage)
            if decisions:
                batch = HeadBatch(
                    encode_batch(head, decisions), np.array(old_log_probs), np.array(advantages)
                )
                update = await asyncio.to_thread(grpo_update, weights, {HEAD: batch}, optimizer, settings)
                weights, optimizer = update.weights, update.optimizer
            snapshot = PolicySnapshot("bench", iteration, {HEAD: head}, dict(weights))
        return before, await success_rate(snapshot)

    return run_event_loop(go())


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
    try:
        gains = [after - before for before, after in map(learning_gain, LEARNING_SEEDS)]
    except ImportError:
        return out
    name = f"toolbench held-out success gain after {LEARNING_ROLLOUTS} GRPO rollouts"
    out.append(Figure(name, statistics.mean(gains) * 100, "pts", 40, False))
    return out


if __name__ == "__main__":
    for figure in figures():
        print(figure.line())
