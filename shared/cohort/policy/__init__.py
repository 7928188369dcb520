"""Decision-head policies as the services hold and serve them: heads and immutable snapshots
(`HeadSpec`, `PolicySnapshot`), reading recorded decisions (`check_recorded_decision`,
`encode_batch`), and deciders for agents (`LocalDecider`, `RemoteDecider`).

The math of a head (feature hashing, batches, log-probabilities) is `cohort.learning.decision_heads`,
which documents the exact formula every component relies on.
"""

from cohort.policy.decider import LocalDecider, RemoteDecider, decide_request, decision_request_from_proto
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
    encode_batch,
    heads_from_proto,
    parameters_sha256,
)

__all__ = [
    "CheckedDecision",
    "DEFAULT_FEATURE_BUCKETS",
    "DEFAULT_TEMPERATURE",
    "MAX_FEATURE_BUCKETS",
    "MIN_FEATURE_BUCKETS",
    "HeadSpec",
    "LocalDecider",
    "PolicySnapshot",
    "RemoteDecider",
    "check_options",
    "check_recorded_decision",
    "check_weights",
    "decide_request",
    "decision_request_from_proto",
    "encode_batch",
    "heads_from_proto",
    "parameters_sha256",
]
