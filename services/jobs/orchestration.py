"""One training job's work, iteration by iteration, through the other services' gRPC APIs.

An iteration: sample a batch of training queries → reserve budget → `CollectGroup`
per query → commit the actual cost → `ScoreGroups` → `UpdatePolicy` → every N iterations
`SaveCheckpoint`, every M iterations evaluate on the held-out split → a new job snapshot.

Everything random is derived from the job's seed and the iteration number (which queries, the
seeds of every rollout), and a checkpoint holds the policy parameters, the optimizer state and the
counters, so a job stopped after iteration k and resumed from its checkpoint continues exactly as an
uninterrupted run would. `TrainingLoop` is the loop over the services, usable on its own (the
learning test and benchmark drive it directly); `TrainingRunner` runs it for the job manager.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf import duration_pb2

from cohort.api.budget.v1 import budget_pb2, budget_pb2_grpc
from cohort.api.checkpoint.v1 import checkpoint_pb2, checkpoint_pb2_grpc
from cohort.api.collector.v1 import collector_pb2, collector_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2
from cohort.api.reward.v1 import reward_pb2, reward_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.context import Identity, current_identity
from cohort.platform.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from cohort.platform.rpc.client import ChannelPool, mark_failed_service
from cohort.platform.transient import Backoff, is_retryable_rpc_error
from cohort.sdk import toolbench
from cohort.sdk.trajectories import ATTEMPT_LABEL
from cohort.sdk.trajectories.usage import PriceTable
from cohort.services.jobs import evaluation, health
from cohort.services.jobs.exploration import exploration_epsilon
from cohort.services.jobs.runner import JobHandle, JobOutcome, RunResult
from cohort.services.jobs.sampling import stratified_batch, uniform_batch
from cohort.services.jobs.scores import record_scores, score_evaluation
from cohort.services.jobs.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_EVALUATION_INTERVAL,
    DEFAULT_GROUP_SIZE,
    DEFAULT_HELDOUT_FRACTION,
    EVALUATION_ROLLOUTS_PER_QUERY,
    rollout_ceiling,
)
from cohort.services.reward.apply import apply_group_scores
from cohort.services.service_context import ServiceContext

log = logging.getLogger(__name__)
T = TypeVar("T")

COLLECT_RETRY_SECONDS = 60.0
"""How long a group's collection is retried while the collector is unavailable (restarting)."""
RESERVATION_HEADROOM = 1.5
"""An iteration reserves this many times what the previous one cost (the first: the spec's estimate)."""
MIN_HOLD = 1
"""micro-USD held when nothing tells what the work will cost: the limit is still checked, and the
commit books the actual cost."""

POLICY_FILE = "policy.pb"
OPTIMIZER_FILE = "optimizer.pb"
STATE_FILE = "state.json"


def derived_seed(*parts: object) -> int:
    """A 40-bit seed from the parts, so rollout (x1000 per decision) seeds stay inside int64."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=5).digest()
    return int.from_bytes(digest, "little")


def request_key(job_id: str, *parts: object) -> str:
    """An idempotency key for one step of a job, short enough for any job id."""
    return f"{job_id[:100]}:{derived_seed(job_id, *parts):010x}"


async def all_or_nothing(*work: Awaitable[T]) -> list[T]:
    """Like `asyncio.gather`, but the first failure cancels the rest (and is raised) instead of
    leaving sibling calls running on, failing later against closed channels with nobody to hear."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@dataclass
class TrainingServices:
    """Stubs of the services a job drives."""

    collector: collector_pb2_grpc.CollectorServiceStub
    reward: reward_pb2_grpc.RewardServiceStub
    trainer: trainer_pb2_grpc.TrainerServiceStub
    checkpoint: checkpoint_pb2_grpc.CheckpointServiceStub
    budget: budget_pb2_grpc.BudgetServiceStub | None = None

    @classmethod
    def from_channels(cls, channels: ChannelPool, *, with_budget: bool = True) -> TrainingServices:
        return cls(
            collector=channels.stub("collector", collector_pb2_grpc.CollectorServiceStub),
            reward=channels.stub("reward", reward_pb2_grpc.RewardServiceStub),
            trainer=channels.stub("trainer", trainer_pb2_grpc.TrainerServiceStub),
            checkpoint=channels.stub("checkpoint", checkpoint_pb2_grpc.CheckpointServiceStub),
            budget=channels.stub("budget", budget_pb2_grpc.BudgetServiceStub) if with_budget else None,
        )


@dataclass
class Dataset:
    train: list[collector_pb2.Query]
    heldout: list[collector_pb2.Query]


def resolve_dataset(spec: jobs_pb2.JobSpec) -> Dataset:
    """The job's training and held-out queries (held-out: given, else the last fraction of the queries)."""
    source = spec.dataset.WhichOneof("source")
    fraction = spec.dataset.heldout_fraction or DEFAULT_HELDOUT_FRACTION
    if source == "toolbench":
        bench = spec.dataset.toolbench
        families = list(bench.task_families)
        train = toolbench.generate_queries("train", bench.train_count, bench.seed, families)
        heldout_count = bench.heldout_count or max(1, round(bench.train_count * fraction / (1 - fraction)))
        heldout = toolbench.generate_queries("heldout", heldout_count, bench.seed, families)
        return Dataset(train, heldout)
    if source == "inline":
        queries = list(spec.dataset.inline.train)
        if spec.dataset.inline.heldout:
            return Dataset(queries, list(spec.dataset.inline.heldout))
        cut = max(1, round(len(queries) * fraction))
        if cut >= len(queries):
            raise InvalidArgument("job.spec.dataset.inline.train", "too few queries to hold some out")
        return Dataset(queries[:-cut], queries[-cut:])
    raise InvalidArgument("job.spec.dataset", "choose inline or toolbench queries")


@dataclass
class TrainingState:
    """What a checkpoint restores: enough to continue exactly where the job was."""

    iteration: int = 0
    """Iterations completed."""
    policy: trajectory_pb2.PolicyRef = field(default_factory=trajectory_pb2.PolicyRef)
    baseline: trajectory_pb2.PolicyRef = field(default_factory=trajectory_pb2.PolicyRef)
    """The starting policy version, which evaluations compare against."""
    optimizer: trainer_pb2.OptimizerState | None = None
    rollouts_completed: int = 0
    cost_micro_usd: int = 0
    last_iteration_cost_micro_usd: int = 0
    reward_history: list[float] = field(default_factory=list)
    success_history: list[float] = field(default_factory=list)
    health: health.HealthState = field(default_factory=health.HealthState)
    """Learning-health counters and which alarms are raised, so a resumed job fires the same events."""

    def to_json(self, seed: int) -> str:
        return json.dumps(
            {
                "iteration": self.iteration,
                "policy": {"policy_id": self.policy.policy_id, "version": self.policy.version},
                "baseline": {"policy_id": self.baseline.policy_id, "version": self.baseline.version},
                "rollouts_completed": self.rollouts_completed,
                "cost_micro_usd": self.cost_micro_usd,
                "last_iteration_cost_micro_usd": self.last_iteration_cost_micro_usd,
                "reward_history": self.reward_history,
                "success_history": self.success_history,
                "health": self.health.to_dict(),
                # Every random choice derives from (seed, iteration): the data cursor and RNG state.
                "seed": seed,
                "data_cursor": self.iteration,
            },
            sort_keys=True,
        )


@dataclass
class IterationReport:
    trajectories: int
    success_rate: float
    reward_mean: float
    cost_micro_usd: int
    update: trainer_pb2.UpdateMetrics
    strata: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per stratum of the batch's queries: (rollouts solved, rollouts)."""
    health: health.LearningHealth | None = None
    events: list[health.HealthEvent] = field(default_factory=list)
    """Learning-health thresholds this iteration crossed (or cleared)."""


class BudgetExhausted(Exception):
    """The tenant's or the job's limit cannot cover the next iteration."""


class TrainingLoop:
    """A job's training through the services: collect, score, update, checkpoint, evaluate."""

    def __init__(
        self,
        services: TrainingServices,
        job_id: str,
        spec: jobs_pb2.JobSpec,
        *,
        prices: PriceTable | None = None,
        attempt: int = 0,
    ) -> None:
        self.services = services
        self.attempt = attempt
        """The job's attempt: group ids carry it, so a redone iteration's rollouts are told apart."""
        self.prices = prices or PriceTable.load()
        self.job_id = job_id
        self.spec = spec
        self.dataset = resolve_dataset(spec)
        self.group_size = spec.group_size or DEFAULT_GROUP_SIZE
        self.batch_size = min(spec.batch_size or DEFAULT_BATCH_SIZE, len(self.dataset.train))
        self.checkpoint_interval = spec.checkpoint_interval or DEFAULT_CHECKPOINT_INTERVAL
        self.evaluation_interval = spec.evaluation_interval or DEFAULT_EVALUATION_INTERVAL
        self.ceiling = rollout_ceiling(spec)
        self.thresholds = health.thresholds_from_proto(spec.collapse_detection)
        self.overspent = ""
        """Why no more work may start: a commit exceeded a limit (empty: none did)."""
        self._evaluation_hold: budget_pb2.Reservation | None = None
        """Reserved with the iteration an evaluation follows; the next `evaluate` commits it."""

    # -- policy ---------------------------------------------------------------------------------

    def policy_heads(self) -> list[trainer_pb2.DecisionHead]:
        heads = list(self.spec.policy.new_policy.heads)
        if not heads and self.spec.runtime.WhichOneof("kind") == "toolbench":
            heads = toolbench.policy_heads()
        if not heads:
            raise InvalidArgument("job.spec.policy.new_policy.heads", "a new policy needs at least one head")
        return heads

    async def start_policy(self) -> trajectory_pb2.PolicyRef:
        """The job's starting policy: the existing one named in the spec, or a new one (idempotently)."""
        source = self.spec.policy.WhichOneof("source")
        if source == "existing":
            existing = self.spec.policy.existing
            response = await self.services.trainer.GetPolicy(
                trainer_pb2.GetPolicyRequest(policy_id=existing.policy_id, version=existing.version)
            )
            return trajectory_pb2.PolicyRef(
                policy_id=response.policy.policy_id, version=response.policy.version
            )
        response = await self.services.trainer.CreatePolicy(
            trainer_pb2.CreatePolicyRequest(
                request_id=request_key(self.job_id, "policy"),
                display_name=self.spec.policy.new_policy.display_name or f"policy of {self.job_id}",
                heads=self.policy_heads(),
            )
        )
        return trajectory_pb2.PolicyRef(policy_id=response.policy.policy_id, version=response.policy.version)

    # -- collection -----------------------------------------------------------------------------

    async def collect(
        self,
        query: collector_pb2.Query,
        *,
        policy: trajectory_pb2.PolicyRef,
        group_id: str,
        iteration: int,
        seed: int,
        size: int,
        labels: dict[str, str],
        request_id: str,
        exploration: float = 0.0,
    ) -> list[trajectory_pb2.Trajectory]:
        """One group; each trajectory labelled with its rollout index (evaluations pair on it).
        `exploration`: ε of the sampled decisions (training only: evaluations measure the policy)."""
        spec = self.spec
        request = collector_pb2.CollectGroupRequest(
            request_id=request_id,
            runtime=spec.runtime,
            query=query,
            group_size=size,
            policy=policy,
            job_id=self.job_id,
            group_id=group_id,
            iteration=iteration,
            max_concurrency=spec.max_concurrency,
            seed=seed,
            max_steps=spec.max_steps,
            labels=labels,
            exploration=exploration,
        )
        if spec.HasField("rollout_timeout"):
            request.rollout_timeout.CopyFrom(spec.rollout_timeout)
        by_index: dict[int, trajectory_pb2.Trajectory] = {}
        backoff: Backoff | None = None
        while True:
            try:
                # Collection may take long; the default deadline is for short calls.
                async for response in self.services.collector.CollectGroup(request, timeout=24 * 3600):
                    trajectory = response.trajectory
                    trajectory.labels["rollout_index"] = str(response.rollout_index)
                    by_index[response.rollout_index] = trajectory
                    backoff = None  # the retry budget is for an outage, not for the whole collection
                break
            except grpc.aio.AioRpcError as exc:
                # A collector restarting: the same request id replays what was stored and runs the rest.
                backoff = backoff or Backoff(COLLECT_RETRY_SECONDS, initial=0.1)
                delay = backoff.next_delay() if is_retryable_rpc_error(exc) else None
                if delay is None:
                    raise mark_failed_service(exc, "collector") from None
                log.warning("job %s: CollectGroup unavailable (%s); retrying", self.job_id, exc.details())
            await asyncio.sleep(delay)
        # Rollouts finish in any order; a fixed order keeps every float sum downstream reproducible.
        return [by_index[index] for index in sorted(by_index)]

    def iteration_queries(self, iteration: int) -> list[tuple[int, collector_pb2.Query]]:
        """The iteration's batch: (index in the training split, query), from the seed and iteration."""
        rng = np.random.default_rng([self.spec.seed & 0xFFFFFFFF, iteration])
        train = self.dataset.train
        if self.spec.dataset.batch_sampling == jobs_pb2.BATCH_SAMPLING_UNIFORM:
            picks = uniform_batch(len(train), self.batch_size, rng)
        else:
            picks = stratified_batch([query.stratum for query in train], self.batch_size, rng)
        return [(i, train[i]) for i in picks]

    # -- budget ---------------------------------------------------------------------------------
    # Every rollout is paid through a reservation committed with its actual cost, evaluations
    # included, so the job's ledger equals the sum of its trajectories' costs.

    def estimated_cost(self, state: TrainingState, rollouts: int) -> int:
        """What `rollouts` rollouts may cost: the previous iteration's cost per rollout with headroom,
        else the spec's ceiling, else `MIN_HOLD` (the first iteration of a runtime that declares no
        ceiling: its actual cost is booked all the same, and measured, it sizes the next holds)."""
        if state.last_iteration_cost_micro_usd:
            per_iteration = state.last_iteration_cost_micro_usd * RESERVATION_HEADROOM
            return max(MIN_HOLD, math.ceil(per_iteration * rollouts / self.rollouts_per_iteration))
        if self.ceiling is not None:
            return max(MIN_HOLD, self.ceiling.price(self.prices, rollouts))
        return MIN_HOLD

    @property
    def rollouts_per_iteration(self) -> int:
        return self.group_size * self.batch_size

    def estimated_iteration_cost(self, state: TrainingState) -> int:
        return self.estimated_cost(state, self.rollouts_per_iteration)

    def evaluation_rollouts(self, queries: int) -> int:
        return queries * 2 * EVALUATION_ROLLOUTS_PER_QUERY

    def evaluates_after(self, iteration: int) -> bool:
        """Whether the runner evaluates once `iteration` is done (as `TrainingRunner.run` decides)."""
        done = iteration + 1
        return done % self.evaluation_interval == 0 or done == self.spec.iterations

    async def reserve(self, state: TrainingState) -> budget_pb2.Reservation | None:
        """Holds the iteration's cost and, when an evaluation follows it, the evaluation's too, so
        work that starts is paid for; `BudgetExhausted` when either does not fit, or when an
        earlier commit of this loop exceeded a limit."""
        if self.services.budget is None:
            return None
        if self.overspent:
            raise BudgetExhausted(self.overspent)
        iteration = state.iteration
        reservation = await self._hold(
            self.estimated_iteration_cost(state), "reserve", self.attempt, iteration
        )
        if self.evaluates_after(iteration):
            amount = self.estimated_cost(state, self.evaluation_rollouts(len(self.dataset.heldout)))
            try:
                self._evaluation_hold = await self._hold(
                    amount, "reserve-evaluation", self.attempt, iteration
                )
            except BaseException:
                await self._release_quietly(reservation)
                raise
        return reservation

    async def _hold(self, amount: int, *key: object) -> budget_pb2.Reservation:
        try:
            response = await self.services.budget.Reserve(
                budget_pb2.ReserveRequest(
                    request_id=request_key(self.job_id, *key),
                    job_id=self.job_id,
                    amount_micro_usd=amount,
                    ttl=duration_pb2.Duration(seconds=3600),
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise BudgetExhausted(exc.details()) from exc
            raise
        return response.reservation

    async def settle(self, reservation: budget_pb2.Reservation | None, cost: int) -> None:
        """Books `cost`, the actual cost, even above the hold; a commit that exceeds a limit stops
        this loop's next reservation (the runner then pauses the job: budget exhausted)."""
        if reservation is None or self.services.budget is None:
            return
        response = await self.services.budget.Commit(
            budget_pb2.CommitRequest(
                request_id=request_key(self.job_id, "commit", reservation.reservation_id),
                reservation_id=reservation.reservation_id,
                cost_micro_usd=cost,
            )
        )
        if response.limit_exceeded and not self.overspent:
            self.overspent = (
                f"spending exceeds the {budget_pb2.LimitScope.Name(response.limiting_scope)} limit by "
                f"{response.over_limit_micro_usd} micro-USD"
            )

    async def _release_quietly(self, reservation: budget_pb2.Reservation | None) -> None:
        """Frees a hold whose work did not happen; failing that, it expires with its ttl."""
        if reservation is None or self.services.budget is None:
            return
        try:
            await self.services.budget.Release(
                budget_pb2.ReleaseRequest(
                    request_id=request_key(self.job_id, "release", reservation.reservation_id),
                    reservation_id=reservation.reservation_id,
                )
            )
        except Exception as exc:  # noqa: BLE001 - the work's own failure is what the caller must see
            log.warning("job %s: %s not released: %s", self.job_id, reservation.reservation_id, exc)

    async def release_earlier_attempts(self) -> int:
        """Frees what earlier attempts of the job still hold (this one holds nothing yet), at once
        rather than at their ttl; the money freed."""
        if self.services.budget is None:
            return 0
        response = await self.services.budget.ReleaseJobReservations(
            budget_pb2.ReleaseJobReservationsRequest(
                request_id=request_key(self.job_id, "release-earlier", self.attempt), job_id=self.job_id
            )
        )
        return response.released_micro_usd

    async def book_unbooked_work(self) -> int:
        """Books what earlier attempts spent but never committed (rollouts stored after the attempt
        died, or before it could commit), so the ledger stays the sum of the job's trajectory costs;
        the money booked. Called by a new attempt before it collects anything itself."""
        if self.services.budget is None:
            return 0
        stored = 0
        token = ""
        while True:
            page = await self.services.collector.SearchTrajectories(
                collector_pb2.SearchTrajectoriesRequest(
                    filter=collector_pb2.TrajectoryFilter(job_id=self.job_id, include_superseded=True),
                    page_size=1000,
                    page_token=token,
                )
            )
            stored += sum(hit.trajectory.cost_micro_usd for hit in page.hits)
            token = page.next_page_token
            if not token:
                break
        usage = await self.services.budget.GetUsage(budget_pb2.GetUsageRequest(job_id=self.job_id))
        unbooked = stored - usage.job.spent_micro_usd
        if unbooked <= 0:
            return 0
        try:
            held = await self._hold(1, "unbooked-hold", self.attempt)
        except BudgetExhausted as exc:
            # At its limit: the next reservation pauses the job; this attempt's successor books it.
            log.warning("job %s: %d micro-USD left unbooked: %s", self.job_id, unbooked, exc)
            return 0
        await self.settle(held, unbooked)
        return unbooked

    # -- one iteration --------------------------------------------------------------------------

    async def supersede_abandoned_work(self, from_iteration: int) -> int:
        """Marks what earlier attempts collected from `from_iteration` on (work this attempt redoes)
        superseded; how many trajectories were marked."""
        response = await self.services.collector.SupersedeTrajectories(
            collector_pb2.SupersedeTrajectoriesRequest(
                request_id=request_key(self.job_id, "supersede", self.attempt, from_iteration),
                job_id=self.job_id,
                from_iteration=from_iteration,
                current_attempt=self.attempt,
            )
        )
        return response.superseded_count

    async def run_iteration(self, state: TrainingState) -> IterationReport:
        """Collect, score and update once; `state` moves to the next iteration on success."""
        iteration = state.iteration
        reservation = await self.reserve(state)
        queries = self.iteration_queries(iteration)
        groups = await all_or_nothing(
            *(
                self.collect(
                    query,
                    policy=state.policy,
                    group_id=f"{self.job_id}-a{self.attempt}-i{iteration}-q{position}",
                    iteration=iteration,
                    seed=derived_seed(self.spec.seed, "train", iteration, index),
                    size=self.group_size,
                    labels={"purpose": "training", ATTEMPT_LABEL: str(self.attempt)},
                    exploration=exploration_epsilon(
                        self.spec.exploration.epsilon, self.spec.exploration.decay_iterations, iteration
                    ),
                    # The attempt is part of the key (as of the group id): an attempt redoing an
                    # iteration collects it afresh, and the dead attempt's rollouts are superseded.
                    request_id=request_key(
                        self.job_id,
                        "collect",
                        self.attempt,
                        state.policy.policy_id,
                        state.policy.version,
                        iteration,
                        position,
                    ),
                )
                for position, (index, query) in enumerate(queries)
            )
        )
        trajectories = [t for group in groups for t in group]
        cost = sum(t.cost_micro_usd for t in trajectories)
        await self.settle(reservation, cost)
        scored = await self.services.reward.ScoreGroups(
            reward_pb2.ScoreGroupsRequest(
                groups=[
                    reward_pb2.TrajectoryGroup(group_id=group[0].group_id, trajectories=group)
                    for group in groups
                    if group
                ],
                reward=self.spec.reward,
                advantage=self.spec.advantage,
                failure_policy=self.spec.failure_policy,
            )
        )
        await record_scores(self.services.collector, scored, job_id=self.job_id)
        for_update = trajectories_for_update(groups, scored)
        update = trainer_pb2.UpdateMetrics()
        if for_update:
            request = trainer_pb2.UpdatePolicyRequest(
                request_id=request_key(
                    self.job_id, "update", state.policy.policy_id, state.policy.version, iteration
                ),
                policy_id=state.policy.policy_id,
                base_version=state.policy.version,
                trajectories=for_update,
                config=self.spec.grpo,
                reference_version=state.baseline.version,
            )
            if state.optimizer is not None:
                request.optimizer_state.CopyFrom(state.optimizer)
            response = await self.services.trainer.UpdatePolicy(request)
            state.policy = trajectory_pb2.PolicyRef(
                policy_id=response.policy.policy_id, version=response.policy.version
            )
            state.optimizer = response.optimizer_state
            update = response.metrics
        update.groups_dropped = max(update.groups_dropped, scored.dropped_group_count)
        solved_per_group = [sum(map(evaluation.solved, group)) for group in groups]
        rewards = [score.reward for group in scored.groups for score in group.trajectories]
        strata: dict[str, tuple[int, int]] = {}
        for (_, query), group, solved_here in zip(queries, groups, solved_per_group, strict=True):
            solved, total = strata.get(query.stratum, (0, 0))
            strata[query.stratum] = (solved + solved_here, total + len(group))
        report = IterationReport(
            trajectories=len(trajectories),
            success_rate=sum(solved_per_group) / len(trajectories) if trajectories else 0.0,
            reward_mean=float(np.mean(rewards)) if rewards else 0.0,
            cost_micro_usd=cost,
            update=update,
            strata=strata,
        )
        state.iteration += 1
        state.rollouts_completed += len(trajectories)
        state.cost_micro_usd += cost
        state.last_iteration_cost_micro_usd = cost
        state.reward_history.append(report.reward_mean)
        state.success_history.append(report.success_rate)
        report.health, report.events = health.observe(
            state.health,
            health.Observation(
                iteration=state.iteration,
                groups=health.group_outcomes(groups, scored, solved_per_group),
                strata=report.strata,
                entropy=health.entropy_stats(health.decisions_of(trajectories)),
                success_rate=report.success_rate,
                update_norm=update.update_norm,
            ),
            self.thresholds,
        )
        for event in report.events:
            level = logging.INFO if event.kind.is_recovery else logging.WARNING
            log.log(level, "job %s: %s", self.job_id, event.message)
        return report

    # -- evaluation -----------------------------------------------------------------------------

    async def evaluate(
        self,
        baseline: trajectory_pb2.PolicyRef,
        candidate: trajectory_pb2.PolicyRef,
        *,
        queries: Sequence[collector_pb2.Query] | None = None,
        seed: int | None = None,
        label: str = "",
    ) -> jobs_pb2.Evaluation:
        """Both policies on the same held-out queries with the same rollout seeds."""
        queries = list(queries) if queries else self.dataset.heldout
        seed = self.spec.seed if seed is None else seed

        async def run(policy: trajectory_pb2.PolicyRef, role: str) -> list[trajectory_pb2.Trajectory]:
            groups = await all_or_nothing(
                *(
                    self.collect(
                        query,
                        policy=policy,
                        group_id=f"{self.job_id}-eval{label}-{role}-q{position}",
                        iteration=0,
                        seed=derived_seed(seed, "evaluation", query.query_id),
                        size=EVALUATION_ROLLOUTS_PER_QUERY,
                        labels={"purpose": "evaluation", "role": role},
                        request_id=request_key(
                            self.job_id,
                            "evaluate",
                            label,
                            role,
                            policy.policy_id,
                            policy.version,
                            position,
                            seed,
                        ),
                    )
                    for position, query in enumerate(queries)
                )
            )
            await score_evaluation(
                self.services.reward, self.services.collector, self.spec, groups, job_id=self.job_id
            )
            return [t for group in groups for t in group]

        hold, self._evaluation_hold = self._evaluation_hold, None
        if hold is None and self.services.budget is not None:
            try:
                hold = await self._hold(
                    self.estimated_cost(TrainingState(), self.evaluation_rollouts(len(queries))),
                    "reserve-evaluation",
                    # As the collections' keys: a repeated evaluation replays them and its booking.
                    label,
                    baseline.policy_id,
                    baseline.version,
                    candidate.policy_id,
                    candidate.version,
                    seed,
                    len(queries),
                )
            except BudgetExhausted as exc:
                raise ResourceExhausted(str(exc), reason="BUDGET_EXHAUSTED") from exc
        try:
            base, cand = await all_or_nothing(run(baseline, "baseline"), run(candidate, "candidate"))
        except BaseException:
            await self._release_quietly(hold)
            raise
        await self.settle(hold, sum(t.cost_micro_usd for t in (*base, *cand)))
        return evaluation.compare(base, cand, baseline_policy=baseline, candidate_policy=candidate, seed=seed)

    # -- checkpoints ----------------------------------------------------------------------------

    async def save_checkpoint(self, state: TrainingState) -> checkpoint_pb2.Checkpoint:
        policy = await self.services.trainer.GetPolicy(
            trainer_pb2.GetPolicyRequest(
                policy_id=state.policy.policy_id, version=state.policy.version, include_parameters=True
            )
        )
        files = [
            checkpoint_pb2.CheckpointFile(name=POLICY_FILE, content=policy.policy.SerializeToString()),
            checkpoint_pb2.CheckpointFile(name=STATE_FILE, content=state.to_json(self.spec.seed).encode()),
        ]
        if state.optimizer is not None:
            files.append(
                checkpoint_pb2.CheckpointFile(
                    name=OPTIMIZER_FILE, content=state.optimizer.SerializeToString()
                )
            )
        # Before the first iteration (a pause right after start) there is nothing measured yet: 0.
        metrics = {
            "iteration": float(state.iteration),
            "reward_mean": state.reward_history[-1] if state.reward_history else 0.0,
            "success_rate": state.success_history[-1] if state.success_history else 0.0,
        }
        retention = self.spec.retention
        if not retention.metric:
            retention = checkpoint_pb2.RetentionPolicy(
                keep_best=retention.keep_best or 5,
                metric="reward_mean",
                direction=checkpoint_pb2.METRIC_DIRECTION_MAXIMIZE,
            )
        response = await self.services.checkpoint.SaveCheckpoint(
            checkpoint_pb2.SaveCheckpointRequest(
                request_id=request_key(
                    self.job_id, "checkpoint", state.iteration, state.policy.policy_id, state.policy.version
                ),
                job_id=self.job_id,
                iteration=state.iteration,
                policy_id=state.policy.policy_id,
                policy_version=state.policy.version,
                metrics=metrics,
                files=files,
                retention=retention,
                cumulative_cost_micro_usd=state.cost_micro_usd,
            )
        )
        return response.checkpoint

    async def restore(self, attempt: int) -> tuple[TrainingState, checkpoint_pb2.Checkpoint] | None:
        """The state of the job's latest valid checkpoint, or None when it has none.

        If the trainer has versions past the checkpoint (an attempt that died after it), the run
        continues on a fork of the checkpointed parameters, so the redone iterations start from
        exactly the checkpointed policy.
        """
        try:
            response = await self.services.checkpoint.GetLatestCheckpoint(
                checkpoint_pb2.GetLatestCheckpointRequest(job_id=self.job_id, include_files=True)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        for skipped in response.skipped:
            log.warning(
                "job %s: checkpoint %s skipped: %s", self.job_id, skipped.checkpoint_id, skipped.reason
            )
        files = {f.name: f.content for f in response.files}
        saved = json.loads(files[STATE_FILE])
        state = TrainingState(
            iteration=saved["iteration"],
            policy=trajectory_pb2.PolicyRef(**saved["policy"]),
            baseline=trajectory_pb2.PolicyRef(**saved["baseline"]),
            rollouts_completed=saved["rollouts_completed"],
            cost_micro_usd=saved["cost_micro_usd"],
            last_iteration_cost_micro_usd=saved["last_iteration_cost_micro_usd"],
            reward_history=saved["reward_history"],
            success_history=saved["success_history"],
            health=health.HealthState.from_dict(saved.get("health")),
        )
        if OPTIMIZER_FILE in files:
            state.optimizer = trainer_pb2.OptimizerState.FromString(files[OPTIMIZER_FILE])
        latest = await self.services.trainer.GetPolicy(
            trainer_pb2.GetPolicyRequest(policy_id=state.policy.policy_id)
        )
        if latest.policy.version != state.policy.version:
            saved_policy = trainer_pb2.Policy.FromString(files[POLICY_FILE])
            fork = await self.services.trainer.CreatePolicy(
                trainer_pb2.CreatePolicyRequest(
                    request_id=request_key(self.job_id, "fork", response.checkpoint.checkpoint_id, attempt),
                    display_name=f"{saved_policy.display_name} (attempt {attempt})",
                    heads=saved_policy.heads,
                    initial_parameters=saved_policy.parameters,
                )
            )
            log.info(
                "job %s: resuming on %s, a fork of %s v%d (checkpoint %s)",
                self.job_id,
                fork.policy.policy_id,
                state.policy.policy_id,
                state.policy.version,
                response.checkpoint.checkpoint_id,
            )
            state.policy = trajectory_pb2.PolicyRef(
                policy_id=fork.policy.policy_id, version=fork.policy.version
            )
        return state, response.checkpoint


def trajectories_for_update(
    groups: Sequence[Sequence[trajectory_pb2.Trajectory]], scored: reward_pb2.ScoreGroupsResponse
) -> list[trajectory_pb2.Trajectory]:
    """Writes the scores onto the trajectories; returns those an update should use."""
    applied = apply_group_scores((t for group in groups for t in group), scored)
    # A dropped group carries no signal: its trajectories are scored but not trained on.
    return [trajectory for group, trajectory in applied if not group.dropped]


class TrainingRunner:
    """The job manager's runner: a `TrainingLoop` per job attempt, reporting progress on the handle."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context
        self._prices = PriceTable.load(context.settings.price_table_file)

    def _loop(self, job: jobs_pb2.Job) -> TrainingLoop:
        # Channels are read per job: the suite sets them once every server of the process is bound.
        services = TrainingServices.from_channels(self._context.channels)
        return TrainingLoop(services, job.job_id, job.spec, prices=self._prices, attempt=job.progress.attempt)

    async def run(self, handle: JobHandle) -> RunResult:
        job = handle.job
        current_identity.set(Identity(tenant_id=job.tenant_id, key_id="jobs", is_admin=True))
        loop = self._loop(job)
        attempt = job.progress.attempt
        if attempt > 1:
            # Before this attempt holds anything: what the job holds now, earlier attempts left.
            await loop.release_earlier_attempts()
        restored = await loop.restore(attempt)
        if restored is None:
            policy = await loop.start_policy()
            state = TrainingState(policy=policy, baseline=policy)
            await self._set_job_limit(loop)
        else:
            state, checkpoint = restored
            await handle.update_progress(
                lambda p: p.MergeFrom(jobs_pb2.JobProgress(latest_checkpoint_id=checkpoint.checkpoint_id))
            )
        if attempt > 1:
            # An earlier attempt may have collected past the point this one resumes from.
            superseded = await loop.supersede_abandoned_work(state.iteration)
            if superseded:
                log.info("job %s attempt %d: %d trajectories superseded", job.job_id, attempt, superseded)
            booked = await loop.book_unbooked_work()
            if booked:
                log.info("job %s attempt %d: booked %d micro-USD left unbooked", job.job_id, attempt, booked)
        total = loop.spec.iterations
        started = time.monotonic()
        first_iteration = state.iteration
        while state.iteration < total:
            if handle.cancelled.is_set():
                return RunResult(JobOutcome.CANCELLED)
            if handle.pause_requested:
                await self._checkpoint(loop, state, handle)
                return RunResult(JobOutcome.PAUSED, jobs_pb2.PAUSE_REASON_REQUESTED)
            try:
                report = await _unless_cancelled(loop.run_iteration(state), handle.cancelled)
            except BudgetExhausted as exc:
                log.info("job %s paused: %s", job.job_id, exc)
                await self._checkpoint(loop, state, handle)
                return RunResult(JobOutcome.PAUSED, jobs_pb2.PAUSE_REASON_BUDGET_EXHAUSTED)
            if report is None:
                return RunResult(JobOutcome.CANCELLED)
            elapsed = time.monotonic() - started
            done_here = state.iteration - first_iteration
            remaining = (total - state.iteration) * elapsed / max(1, done_here)
            await handle.update_progress(_progress_update(state, report, total, remaining))
            if state.iteration % loop.checkpoint_interval == 0 or state.iteration == total:
                await self._checkpoint(loop, state, handle)
            if state.iteration % loop.evaluation_interval == 0 or state.iteration == total:
                evaluated = await _unless_cancelled(
                    loop.evaluate(state.baseline, state.policy, label=f"-i{state.iteration}"),
                    handle.cancelled,
                )
                if evaluated is None:
                    return RunResult(JobOutcome.CANCELLED)
                evaluated.iteration = state.iteration
                evaluated.checkpoint_id = handle.job.progress.latest_checkpoint_id
                evaluated.create_time.GetCurrentTime()
                await handle.update_progress(lambda p, e=evaluated: p.evaluations.append(e))
        return RunResult(JobOutcome.SUCCEEDED)

    async def evaluate(self, job: jobs_pb2.Job, request: jobs_pb2.EvaluateJobRequest) -> jobs_pb2.Evaluation:
        """`EvaluateJob`: the named (or latest) checkpoint against the job's starting policy."""
        current_identity.set(Identity(tenant_id=job.tenant_id, key_id="jobs", is_admin=True))
        loop = self._loop(job)
        services = loop.services
        if request.checkpoint_id:
            response = await services.checkpoint.GetCheckpoint(
                checkpoint_pb2.GetCheckpointRequest(checkpoint_id=request.checkpoint_id, include_files=True)
            )
            checkpoint, files = response.checkpoint, response.files
            if checkpoint.job_id != job.job_id:
                raise InvalidArgument("checkpoint_id", f"{request.checkpoint_id} belongs to another job")
        else:
            try:
                response = await services.checkpoint.GetLatestCheckpoint(
                    checkpoint_pb2.GetLatestCheckpointRequest(job_id=job.job_id, include_files=True)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise FailedPrecondition(f"job {job.job_id} has no checkpoint to evaluate yet") from exc
                raise
            checkpoint, files = response.checkpoint, response.files
        saved = json.loads({f.name: f.content for f in files}[STATE_FILE])
        baseline = trajectory_pb2.PolicyRef(**saved["baseline"])
        candidate = trajectory_pb2.PolicyRef(
            policy_id=checkpoint.policy_id, version=checkpoint.policy_version
        )
        result = await loop.evaluate(
            baseline,
            candidate,
            queries=list(request.queries) or None,
            seed=request.seed or None,
            label=f"-{checkpoint.checkpoint_id}",
        )
        result.checkpoint_id = checkpoint.checkpoint_id
        result.iteration = checkpoint.iteration
        result.create_time.GetCurrentTime()
        return result

    async def _checkpoint(self, loop: TrainingLoop, state: TrainingState, handle: JobHandle) -> None:
        checkpoint = await loop.save_checkpoint(state)
        await handle.update_progress(lambda p: setattr(p, "latest_checkpoint_id", checkpoint.checkpoint_id))

    async def _set_job_limit(self, loop: TrainingLoop) -> None:
        limit = loop.spec.budget.limit_micro_usd
        if not limit or loop.services.budget is None:
            return
        await loop.services.budget.SetLimit(
            budget_pb2.SetLimitRequest(
                request_id=request_key(loop.job_id, "limit", limit),
                scope=budget_pb2.LIMIT_SCOPE_JOB,
                job_id=loop.job_id,
                limit_micro_usd=limit,
            )
        )


def _progress_update(state: TrainingState, report: IterationReport, total: int, remaining_seconds: float):
    def mutate(progress: jobs_pb2.JobProgress) -> None:
        progress.iteration = state.iteration
        progress.iterations_total = total
        progress.rollouts_completed = state.rollouts_completed
        progress.latest_update.CopyFrom(report.update)
        progress.success_rate = report.success_rate
        progress.reward_mean = report.reward_mean
        progress.policy.CopyFrom(state.policy)
        progress.cost_micro_usd = state.cost_micro_usd
        progress.eta.FromNanoseconds(int(max(0.0, remaining_seconds) * 1e9))
        if report.health is not None:
            progress.health.CopyFrom(health.health_proto(report.health))
        # Events of this iteration or later are an earlier attempt's, which this one redoes.
        for index in reversed(range(len(progress.events))):
            if progress.events[index].iteration >= state.iteration:
                del progress.events[index]
        progress.events.extend(map(health.event_proto, report.events))
        excess = len(progress.events) - health.MAX_EVENTS
        if excess > 0:
            del progress.events[:excess]

    return mutate


async def _unless_cancelled(work, cancelled: asyncio.Event):
    """Awaits `work`, or cancels it (reaching in-flight rollouts) and returns None once `cancelled` is set."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancelled.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
