"""`PolicySnapshot.decide` against a frozen copy of its original implementation: the same choice, the
same log-probability and distribution (bit for bit), the same decision message, the same errors."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from itertools import accumulate

import numpy as np
import pytest

from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.learning import bucket
from cohort.platform.errors import InvalidArgument, NotFound
from cohort.policy import HeadSpec, PolicySnapshot, check_options, decision_request_from_proto
from cohort.sdk.runtime import DecisionRequest

# --- The reference: `decide` as it was before it was made faster (do not "fix" it) --------------


def _reference_check_features(features, field_name):
    try:
        checked = {name: float(value) for name, value in features.items()}
    except (TypeError, ValueError, AttributeError) as error:
        raise InvalidArgument(field_name, f"must map names to numbers ({error})") from None
    if not all(map(math.isfinite, checked.values())):
        bad = next(name for name, value in checked.items() if not math.isfinite(value))
        raise InvalidArgument(f"{field_name}[{bad}]", f"must be a finite number, not {checked[bad]}")
    for name in checked:
        if not isinstance(name, str):
            raise InvalidArgument(field_name, f"feature names must be strings, not {type(name).__name__}")
    return checked


def _reference_log_probabilities(weights, head, options, features, option_features):
    names = tuple(sorted(features))
    context = np.empty(len(names) + 1, dtype=np.float64)
    context[0] = 1.0
    context[1:] = [features[name] for name in names]
    matrix = np.empty((len(options), len(names) + 1), dtype=np.int64)
    for i, option in enumerate(options):
        prefix = option + "\x1f"
        matrix[i, 0] = bucket(prefix, head.feature_buckets)
        matrix[i, 1:] = [bucket(prefix + name, head.feature_buckets) for name in names]
    logits = (weights[matrix] @ context).tolist()
    if option_features:
        for i, values in enumerate(option_features):
            if values:
                logits[i] += float(
                    sum(
                        weights[bucket("\x1e" + name, head.feature_buckets)] * values[name]
                        for name in sorted(values)
                    )
                )
    top = max(logits)
    shifted = [(logit - top) / head.temperature for logit in logits]
    log_total = math.log(math.fsum(math.exp(value) for value in shifted))
    return [value - log_total for value in shifted]


def reference_decide(snapshot: PolicySnapshot, request: DecisionRequest) -> trajectory_pb2.Decision:
    head = snapshot.heads.get(request.head)
    if head is None:
        raise NotFound(
            f"head {request.head!r} not found in policy {snapshot.policy_id!r} version {snapshot.version}"
        )
    options = tuple(request.options)
    if head.options:
        # Since issue 20: a non-empty subset of the head's options, in the head's order, is accepted.
        if options and options != head.options:
            problem, last = None, -1
            for i, option in enumerate(options):
                if option not in head.options:
                    problem = f"options[{i}] {option!r} is not one of them"
                    break
                if head.options.index(option) <= last:
                    problem = f"options[{i}] {option!r} is out of order or repeated"
                    break
                last = head.options.index(option)
            if problem is not None:
                raise InvalidArgument(
                    "options",
                    f"head {head.name!r} has fixed options: send none, or some of "
                    f"{list(head.options)} in that order; {problem}",
                )
        else:
            options = head.options
    else:
        if not options:
            raise InvalidArgument("options", f"head {head.name!r} has no fixed options: send the candidates")
        check_options(options, "options")
    option_features = request.option_features
    if option_features and len(option_features) != len(options):
        raise InvalidArgument(
            "option_features", f"has {len(option_features)} entries for {len(options)} options"
        )
    features = _reference_check_features(request.features, "features")
    checked_option_features = [
        _reference_check_features(values, f"option_features[{i}]") for i, values in enumerate(option_features)
    ]
    log_probs = _reference_log_probabilities(
        snapshot.weights[head.name], head, options, features, checked_option_features
    )
    probabilities = [math.exp(value) for value in log_probs]
    if request.greedy:
        chosen = max(range(len(options)), key=log_probs.__getitem__)
    else:
        assert request.seed is not None, "the reference is only compared on seeded decisions"
        rng = np.random.default_rng(request.seed % (1 << 64))
        cumulative = list(accumulate(probabilities))
        chosen = min(bisect_right(cumulative, rng.random() * cumulative[-1]), len(options) - 1)
    return trajectory_pb2.Decision(
        head=head.name,
        options=options,
        chosen_index=chosen,
        chosen=options[chosen],
        log_prob=float(log_probs[chosen]),
        probabilities=probabilities,
        features=features,
        option_features=[trajectory_pb2.FeatureMap(values=values) for values in checked_option_features],
        policy=trajectory_pb2.PolicyRef(policy_id=snapshot.policy_id, version=snapshot.version),
        greedy=request.greedy,
    )


# --- The comparison ---------------------------------------------------------------------------


def _snapshot(seed: int, buckets: int, temperature: float) -> PolicySnapshot:
    rng = np.random.default_rng(seed)
    heads = {
        "tool": HeadSpec("tool", ("search", "calc", "lookup", "browse", "answer"), buckets, temperature),
        "pick": HeadSpec("pick", (), buckets, temperature),
    }
    return PolicySnapshot("pol", 7, heads, {name: rng.normal(scale=3.0, size=buckets) for name in heads})


def _same(actual: trajectory_pb2.Decision, expected: trajectory_pb2.Decision) -> None:
    assert actual.HasField("timestamp")
    actual.ClearField("timestamp")
    assert actual.chosen_index == expected.chosen_index
    assert actual.log_prob.hex() == expected.log_prob.hex()
    assert [p.hex() for p in actual.probabilities] == [p.hex() for p in expected.probabilities]
    # field for field and byte for byte (map entries in the same order)
    assert actual.SerializeToString() == expected.SerializeToString()


def _random_features(rng: random.Random, names: list[str]) -> dict[str, float]:
    chosen = rng.sample(names, rng.randint(0, len(names)))
    return {name: rng.choice([0.0, 1.0, -2.5, rng.uniform(-50, 50), rng.gauss(0, 1e-3)]) for name in chosen}


@pytest.mark.parametrize("buckets,temperature", [(16, 1.0), (4096, 0.37), (1 << 20, 2.5)])
def test_decide_matches_the_reference_bit_for_bit(buckets, temperature):
    snapshot = _snapshot(buckets, buckets, temperature)
    rng = random.Random(buckets)
    names = [f"feature_{i}" for i in range(12)] + ["steps", "has_number", "ünïcode", ""]
    for n in range(1500):
        features = _random_features(rng, names)
        greedy = n % 7 == 0
        seed = None if greedy else rng.choice([n, rng.getrandbits(64), rng.getrandbits(80), -n - 1, 0])
        if n % 2:
            request = DecisionRequest("tool", features, greedy=greedy, seed=seed)
        else:
            options = tuple(rng.sample(["a", "b", "c", "d", "e", "f", "g"], rng.randint(1, 7)))
            option_features = (
                tuple(_random_features(rng, ["cost", "len", "x"]) for _ in options) if n % 4 == 0 else ()
            )
            request = DecisionRequest(
                "pick", features, options=options, option_features=option_features, greedy=greedy, seed=seed
            )
        _same(snapshot.decide(request), reference_decide(snapshot, request))
        # the same request as it arrives over gRPC: protobuf maps instead of dicts
        message = trainer_pb2.DecideRequest(
            policy_id="pol",
            head=request.head,
            features=request.features,
            options=request.options,
            option_features=[trajectory_pb2.FeatureMap(values=v) for v in request.option_features],
            mode=trainer_pb2.DECISION_MODE_GREEDY if greedy else trainer_pb2.DECISION_MODE_SAMPLE,
        )
        if seed is not None:
            message.seed = (seed + (1 << 63)) % (1 << 64) - (1 << 63)  # an int64
        from_proto = decision_request_from_proto(message)
        _same(snapshot.decide(from_proto), reference_decide(snapshot, from_proto))


def test_decide_samples_the_reference_draw_for_any_seed():
    snapshot = _snapshot(1, 64, 1.0)
    rng = random.Random(3)
    seeds = [0, 1, 2, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64, -1, 10**30]
    seeds += [rng.getrandbits(bits) for bits in (8, 16, 31, 32, 33, 63, 64, 65, 100) for _ in range(200)]
    for seed in seeds:
        request = DecisionRequest("pick", {"x": 1.0}, options=tuple("abcdefghij"), seed=seed)
        _same(snapshot.decide(request), reference_decide(snapshot, request))


def test_large_layouts_not_kept_by_the_snapshot_match_the_reference_too():
    snapshot = _snapshot(4, 4096, 0.9)
    options = tuple(f"candidate-{i}" for i in range(300))
    features = {f"f{i}": i / 3 for i in range(6)}  # 300 x 7 weights: more than a snapshot keeps
    for seed in range(20):
        request = DecisionRequest("pick", features, options=options, seed=seed)
        _same(snapshot.decide(request), reference_decide(snapshot, request))
    assert not snapshot._context_rows


def test_the_seeded_draw_is_numpys_first_draw():
    from cohort.policy.snapshot import _seeded_uniform

    rng = random.Random(11)
    seeds = [0, 1, 2, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    seeds += [rng.getrandbits(bits) for bits in range(1, 65) for _ in range(40)]
    for seed in seeds:
        assert _seeded_uniform(seed).hex() == np.random.default_rng(seed).random().hex(), seed


BAD_REQUESTS = [
    DecisionRequest("nope", {}),
    DecisionRequest("tool", {}, options=("search",)),  # a subset: accepted by both
    DecisionRequest("tool", {}, options=("calc", "search")),
    DecisionRequest("tool", {}, options=("search", "search")),
    DecisionRequest("tool", {}, options=("search", "nope")),
    DecisionRequest("tool", {}, options=("search", ["calc"])),
    DecisionRequest("pick", {}),
    DecisionRequest("pick", {}, options=("a", "a")),
    DecisionRequest("pick", {}, options=("a", "")),
    DecisionRequest("pick", {}, options=("a", "b"), option_features=({},)),
    DecisionRequest("tool", {"x": math.inf}),
    DecisionRequest("tool", {"x": math.nan, "y": -math.inf}),
    DecisionRequest("tool", {"x": "1.5"}),
    DecisionRequest("tool", {"x": "many"}),
    DecisionRequest("tool", {"x": None}),
    DecisionRequest("tool", {3: 1.0}),
    DecisionRequest("tool", {"x": 1.0, 3: 2.0}),
    DecisionRequest("tool", [("x", 1.0)]),
    DecisionRequest("tool", None),
    DecisionRequest("pick", {}, options=("a", "b"), option_features=({"u": 1.0}, {"v": math.nan})),
    DecisionRequest("pick", {}, options=("a", "b"), option_features=({"u": 1.0}, {1: 1.0})),
]


@pytest.mark.parametrize("request_", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_decide_refuses_what_the_reference_refuses_with_the_same_error(request_):
    snapshot = _snapshot(2, 64, 1.0)
    request = DecisionRequest(**{**request_.__dict__, "seed": 5})
    try:
        expected = reference_decide(snapshot, request)
    except (InvalidArgument, NotFound) as error:
        with pytest.raises(type(error)) as caught:
            snapshot.decide(request)
        assert caught.value.message == error.message
        assert getattr(caught.value, "field", None) == getattr(error, "field", None)
    else:  # accepted by both (a number given as a string, say)
        _same(snapshot.decide(request), expected)
