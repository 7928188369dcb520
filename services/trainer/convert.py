"""The trainer's edge: `GrpoConfig` -> `GrpoSettings` and `OptimizerState` <-> `AdamState`, so the
GRPO math in `cohort.learning.grpo` never sees a protobuf message."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from cohort.api.trainer.v1 import trainer_pb2
from cohort.learning import AdamState, GrpoSettings
from cohort.platform.errors import InvalidArgument

# proto3 cannot tell an unset scalar from 0, so 0 asks for the default (see grpo_settings_from_proto).
_ZERO_MEANS_DEFAULT = (
    "learning_rate",
    "clip_epsilon_low",
    "clip_epsilon_high",
    "kl_beta",
    "entropy_coefficient",
    "inner_epochs",
    "max_grad_norm",
    "adam_beta1",
    "adam_beta2",
    "seed",
)


def grpo_settings_from_proto(config: trainer_pb2.GrpoConfig) -> GrpoSettings:
    """Settings from a request's `GrpoConfig`: zero (unset) fields take the defaults; an `optional`
    field (`max_policy_staleness`) only when unset, so 0 can be asked for. Invalid values raise
    `InvalidArgument` naming `config.<field>`."""
    defaults = {f.name: f.default for f in fields(GrpoSettings)}
    values = {}
    for name in _ZERO_MEANS_DEFAULT:
        value = getattr(config, name)
        values[name] = value if value != 0 else defaults[name]  # NaN != 0, so NaN is validated
    if config.HasField("max_policy_staleness"):
        values["max_policy_staleness"] = config.max_policy_staleness
    values["positive_advantage_only"] = bool(config.positive_advantage_only)
    return GrpoSettings(**values)


def adam_state_from_proto(state: trainer_pb2.OptimizerState, weights: dict[str, np.ndarray]) -> AdamState:
    """The state in `state`, checked against the policy's `weights`; heads it omits start at zero."""
    if state.step < 0:
        raise InvalidArgument("optimizer_state.step", f"must be >= 0, got {state.step}")
    result = AdamState.zeros(weights)
    result.step = int(state.step)
    for kind, entries, target in (
        ("first_moments", state.first_moments, result.first_moments),
        ("second_moments", state.second_moments, result.second_moments),
    ):
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"optimizer_state.{kind}[{i}]"
            if entry.head not in weights:
                raise InvalidArgument(f"{where}.head", f"the policy has no head {entry.head!r}")
            if entry.head in seen:
                raise InvalidArgument(f"{where}.head", f"head {entry.head!r} appears twice")
            seen.add(entry.head)
            values = np.asarray(entry.weights, dtype=np.float64)
            expected = weights[entry.head].shape[0]
            if values.shape[0] != expected:
                raise InvalidArgument(
                    f"{where}.weights",
                    f"head {entry.head!r} has {expected} weights, the moments have {values.shape[0]}",
                )
            if not np.all(np.isfinite(values)) or (kind == "second_moments" and np.any(values < 0)):
                raise InvalidArgument(f"{where}.weights", "must be finite (and >= 0 for second moments)")
            target[entry.head] = values
    return result


def adam_state_to_proto(state: AdamState) -> trainer_pb2.OptimizerState:
    return trainer_pb2.OptimizerState(
        step=state.step,
        first_moments=[
            trainer_pb2.HeadParameters(head=head, weights=m.tolist())
            for head, m in sorted(state.first_moments.items())
        ],
        second_moments=[
            trainer_pb2.HeadParameters(head=head, weights=v.tolist())
            for head, v in sorted(state.second_moments.items())
        ],
    )
