"""The learning math of Cohort: plain NumPy functions, no protobuf and no RPC.

Services convert their messages to these types at their edge (the trainer's
`cohort.services.trainer.convert`, the reward servicer) and call in here.

- `decision_heads`: the decision-head policy `pi(a | x) = softmax(W . phi(x, a) / temperature)`:
  hashed sparse features, padded batches of recorded decisions, exact log-probabilities.
- `grpo`: the GRPO loss and its full-batch Adam update: GRPO's clipped surrogate (DeepSeekMath),
  DAPO's clip-higher (`clip_epsilon_high`), the k3 KL estimator, an entropy bonus.
- `advantages`: group advantages, by name in `ADVANTAGE_ESTIMATORS`: GRPO `(r - mean) / std`,
  Dr. GRPO `r - mean`; credit assignment to decisions: Flow-GRPO's broadcast, discounted returns.
- `exploration`: the ε-mixture behaviour policy `(1 - ε) * pi + ε * uniform` and its exact
  log-probabilities, so the GRPO ratio stays the true one.
"""

from cohort.learning.advantages import (
    ADVANTAGE_ESTIMATORS,
    DEFAULT_EPSILON,
    DEFAULT_GAMMA,
    AdvantageEstimator,
    discounted_decision_returns,
    discounted_returns,
    dr_grpo_advantages,
    flow_grpo_broadcast,
    group_statistics,
    grpo_advantages,
    step_reward_matrix,
)
from cohort.learning.decision_heads import (
    OPTION_SEPARATOR,
    SHARED_PREFIX,
    DecisionBatch,
    bucket,
    encode_checked,
    log_probabilities,
    log_softmax,
    logits_of,
    option_row,
    option_rows,
    pad_rows,
)
from cohort.learning.exploration import mixture_log_probabilities
from cohort.learning.grpo import (
    NON_FINITE_UPDATE,
    AdamState,
    GrpoSettings,
    HeadBatch,
    LossTerms,
    UpdateResult,
    grpo_loss,
    grpo_update,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "DEFAULT_EPSILON",
    "DEFAULT_GAMMA",
    "NON_FINITE_UPDATE",
    "OPTION_SEPARATOR",
    "SHARED_PREFIX",
    "AdamState",
    "AdvantageEstimator",
    "DecisionBatch",
    "GrpoSettings",
    "HeadBatch",
    "LossTerms",
    "UpdateResult",
    "bucket",
    "discounted_decision_returns",
    "discounted_returns",
    "dr_grpo_advantages",
    "encode_checked",
    "flow_grpo_broadcast",
    "group_statistics",
    "grpo_advantages",
    "grpo_loss",
    "grpo_update",
    "log_probabilities",
    "log_softmax",
    "logits_of",
    "mixture_log_probabilities",
    "option_row",
    "option_rows",
    "pad_rows",
    "step_reward_matrix",
]
