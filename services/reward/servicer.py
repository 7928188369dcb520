"""gRPC servicer of `cohort.api.reward.v1.RewardService`: proto <-> domain conversion only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import grpc.aio

from cohort.api.reward.v1 import reward_pb2 as rpb
from cohort.api.reward.v1 import reward_pb2_grpc
from cohort.platform.context import require_identity
from cohort.platform.errors import InvalidArgument
from cohort.platform.paging import DEFAULT_PAGE_SIZE
from cohort.platform.rpc.interceptors import status_of
from cohort.services.reward.functions import (
    RewardFunctionRegistry,
    function_from_proto,
    function_to_proto,
)
from cohort.services.reward.service import (
    DEFAULT_REWARD,
    AdvantageSpec,
    CreditAssignment,
    FailurePolicy,
    GroupInput,
    Normalization,
    RewardScorer,
    RewardSpec,
    ScoreResult,
    WeightedFunction,
)

_NORMALIZATION = {
    rpb.ADVANTAGE_NORMALIZATION_UNSPECIFIED: Normalization.MEAN_STD,
    rpb.ADVANTAGE_NORMALIZATION_MEAN_STD: Normalization.MEAN_STD,
    rpb.ADVANTAGE_NORMALIZATION_MEAN_ONLY: Normalization.MEAN_ONLY,
}
_CREDIT = {
    rpb.CREDIT_ASSIGNMENT_UNSPECIFIED: CreditAssignment.BROADCAST,
    rpb.CREDIT_ASSIGNMENT_BROADCAST: CreditAssignment.BROADCAST,
    rpb.CREDIT_ASSIGNMENT_DISCOUNTED_RETURNS: CreditAssignment.DISCOUNTED_RETURNS,
}
_FAILURE_POLICY = {
    rpb.FAILURE_POLICY_UNSPECIFIED: FailurePolicy.SCORE_AS_FAILURE,
    rpb.FAILURE_POLICY_SCORE_AS_FAILURE: FailurePolicy.SCORE_AS_FAILURE,
    rpb.FAILURE_POLICY_DROP: FailurePolicy.DROP,
    rpb.FAILURE_POLICY_RETRY: FailurePolicy.RETRY,
}

_Wire = TypeVar("_Wire", bound=int)
_Domain = TypeVar("_Domain")


def _enum(table: Mapping[_Wire, _Domain], value: _Wire, field: str) -> _Domain:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(field, f"unknown value {value}") from None


def reward_spec_from_proto(request: rpb.ScoreGroupsRequest) -> RewardSpec:
    if not request.HasField("reward"):
        return DEFAULT_REWARD
    spec = request.reward
    return RewardSpec(
        outcome_weight=spec.outcome_weight,
        tool_usage_weight=spec.tool_usage_weight,
        verification_weight=spec.verification_weight,
        length_penalty_weight=spec.length_penalty_weight,
        step_budget=spec.step_budget,
        token_budget=spec.token_budget,
        custom_functions=tuple(
            WeightedFunction(f.name, f.weight, f.params_json) for f in spec.custom_functions
        ),
    )


def advantage_spec_from_proto(message: rpb.AdvantageConfig) -> AdvantageSpec:
    """An unset `gamma` is 1.0 (it has presence, so 0 can be asked for); a zero `epsilon` is proto3's
    unset: 1e-6."""
    defaults = AdvantageSpec()
    return AdvantageSpec(
        normalization=_enum(_NORMALIZATION, message.normalization, "advantage.normalization"),
        credit_assignment=_enum(_CREDIT, message.credit_assignment, "advantage.credit_assignment"),
        gamma=message.gamma if message.HasField("gamma") else defaults.gamma,
        epsilon=message.epsilon or defaults.epsilon,
    )


def score_groups_response(result: ScoreResult) -> rpb.ScoreGroupsResponse:
    response = rpb.ScoreGroupsResponse(dropped_group_count=result.dropped_group_count)
    for group in result.groups:
        message = response.groups.add(
            group_id=group.group_id,
            reward_mean=group.reward_mean,
            reward_std=group.reward_std,
            size=group.size,
            dropped=group.dropped,
            drop_reason=group.drop_reason,
            retry_trajectory_ids=group.retry_trajectory_ids,
        )
        scores = message.trajectories
        for t in group.trajectories:
            if t.error is not None:
                scores.add(trajectory_id=t.trajectory_id, error=status_of(t.error))
                continue
            score = scores.add(
                trajectory_id=t.trajectory_id,
                reward=t.reward,
                advantage=t.advantage,
                decision_advantages=t.decision_advantages,
                dropped=t.dropped,
            )
            components = score.components
            for c in t.components:
                components.add(name=c.name, value=c.value, weight=c.weight, detail=c.detail)
    return response


class RewardServiceServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, scorer: RewardScorer, registry: RewardFunctionRegistry) -> None:
        self._scorer = scorer
        self._registry = registry

    async def ScoreGroups(
        self,
        request: rpb.ScoreGroupsRequest,
        context: grpc.aio.ServicerContext[rpb.ScoreGroupsRequest, rpb.ScoreGroupsResponse],
    ) -> rpb.ScoreGroupsResponse:
        tenant_id = require_identity().tenant_id
        result = await self._scorer.score_groups(
            tenant_id,
            [GroupInput(g.group_id, g.trajectories, g.trajectory_ids) for g in request.groups],
            reward_spec_from_proto(request),
            advantage_spec_from_proto(request.advantage),
            _enum(_FAILURE_POLICY, request.failure_policy, "failure_policy"),
        )
        return score_groups_response(result)

    async def ListRewardFunctions(
        self,
        request: rpb.ListRewardFunctionsRequest,
        context: grpc.aio.ServicerContext[rpb.ListRewardFunctionsRequest, rpb.ListRewardFunctionsResponse],
    ) -> rpb.ListRewardFunctionsResponse:
        functions, next_token = await self._registry.list(
            require_identity().tenant_id, request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return rpb.ListRewardFunctionsResponse(
            functions=[function_to_proto(f) for f in functions], next_page_token=next_token
        )

    async def RegisterRewardFunction(
        self,
        request: rpb.RegisterRewardFunctionRequest,
        context: grpc.aio.ServicerContext[
            rpb.RegisterRewardFunctionRequest, rpb.RegisterRewardFunctionResponse
        ],
    ) -> rpb.RegisterRewardFunctionResponse:
        identity = require_identity()
        if not request.HasField("function"):
            raise InvalidArgument("function", "is required")
        function = function_from_proto(request.function)
        return await self._registry.register(
            identity.tenant_id, request, function, is_admin=identity.is_admin
        )
