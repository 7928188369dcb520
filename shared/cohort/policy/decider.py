"""Deciders (`cohort.sdk.runtime.Decider`) over a policy: in-process on a snapshot, or over gRPC."""

from __future__ import annotations

from collections.abc import Sequence

from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.policy.snapshot import PolicySnapshot
from cohort.sdk.runtime import DecisionRequest


class LocalDecider:
    """Evaluates a `PolicySnapshot` in this process (no network; the same result as `Decide`)."""

    def __init__(self, snapshot: PolicySnapshot) -> None:
        self.snapshot = snapshot
        self.policy = trajectory_pb2.PolicyRef(policy_id=snapshot.policy_id, version=snapshot.version)

    async def __call__(self, request: DecisionRequest) -> trajectory_pb2.Decision:
        # A decision costs tens of microseconds: cheaper inline than a hop to a worker thread.
        return self.snapshot.decide(request)


class RemoteDecider:
    """Calls `TrainerService.Decide` for each decision; gRPC errors reach the caller as raised."""

    def __init__(
        self,
        stub: trainer_pb2_grpc.TrainerServiceStub,
        policy: trajectory_pb2.PolicyRef,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.stub = stub
        self.policy = policy
        self.metadata = tuple(metadata) if metadata else None
        self.timeout = timeout

    async def __call__(self, request: DecisionRequest) -> trajectory_pb2.Decision:
        message = decide_request(self.policy, request)
        response = await self.stub.Decide(message, metadata=self.metadata, timeout=self.timeout)
        return response.decision


def decide_request(policy: trajectory_pb2.PolicyRef, request: DecisionRequest) -> trainer_pb2.DecideRequest:
    """The `DecideRequest` message of a `DecisionRequest` against `policy`."""
    message = trainer_pb2.DecideRequest(
        policy_id=policy.policy_id,
        version=policy.version,
        head=request.head,
        features=request.features,
        options=request.options,
        option_features=[trajectory_pb2.FeatureMap(values=values) for values in request.option_features],
        mode=trainer_pb2.DECISION_MODE_GREEDY if request.greedy else trainer_pb2.DECISION_MODE_SAMPLE,
    )
    if request.seed is not None:
        message.seed = request.seed
    if request.exploration:
        message.exploration = request.exploration
    return message


def decision_request_from_proto(message: trainer_pb2.DecideRequest) -> DecisionRequest:
    """The `DecisionRequest` a `DecideRequest` message asks for."""
    return DecisionRequest(
        head=message.head,
        features=message.features,
        options=tuple(message.options),
        option_features=[feature_map.values for feature_map in message.option_features],
        greedy=message.mode == trainer_pb2.DECISION_MODE_GREEDY,
        seed=message.seed if message.HasField("seed") else None,
        exploration=message.exploration,
    )
