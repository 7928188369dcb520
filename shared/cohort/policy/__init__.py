"""Decision-head policies: `pi(a|x) = softmax(W . phi(x, a) / temperature)` per head.

Feature hashing (`bucket`, `option_rows`), batch scoring for training (`DecisionBatch`,
`encode_batch`, `encode_checked`, `log_probabilities`), heads and immutable snapshots (`HeadSpec`,
`PolicySnapshot`), and deciders for agents (`LocalDecider`, `RemoteDecider`). See
`cohort.policy.features` for the exact formula every component relies on.
"""

from cohort.policy.decider import LocalDecider, RemoteDecider, decide_request, decision_request_from_proto
from cohort.policy.features import (
    DecisionBatch,
    bucket,
    encode_batch,
    encode_checked,
    log_probabilities,
    log_softmax,
    logits_of,
    option_row,
    option_rows,
    pad_rows,
)
from cohort.policy.snapshot import (
    DEFAULT_FEATURE_BUCKETS,
    DEFAULT_TEMPERATURE,
    MAX_FEATURE_BUCKETS,
    MIN_FEATURE_BUCKETS,
    CheckedDecision,
    HeadSpec,
    PolicySnapshot,
    check_options,
    check_recorded_decision,
    check_weights,
    heads_from_proto,
    parameters_sha256,
)

__all__ = [
    "CheckedDecision",
    "DEFAULT_FEATURE_BUCKETS",
    "DEFAULT_TEMPERATURE",
    "MAX_FEATURE_BUCKETS",
    "MIN_FEATURE_BUCKETS",
    "DecisionBatch",
    "HeadSpec",
    "LocalDecider",
    "PolicySnapshot",
    "RemoteDecider",
    "bucket",
    "check_options",
    "check_recorded_decision",
    "check_weights",
    "decide_request",
    "decision_request_from_proto",
    "encode_batch",
    "encode_checked",
    "heads_from_proto",
    "log_probabilities",
    "log_softmax",
    "logits_of",
    "option_row",
    "option_rows",
    "pad_rows",
    "parameters_sha256",
]
