"""Decision-head policies: the exact hashing formula, the distribution, sampling and validation."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.learning import bucket, log_probabilities, option_rows
from cohort.platform.errors import InvalidArgument, NotFound
from cohort.policy import (
    HeadSpec,
    LocalDecider,
    PolicySnapshot,
    decide_request,
    decision_request_from_proto,
    encode_batch,
    heads_from_proto,
    parameters_sha256,
)
from cohort.sdk.runtime import DecisionRequest

TOOLS = ("search", "calculator", "answer")


def snapshot(seed: int = 0, buckets: int = 64, temperature: float = 1.0, options=TOOLS) -> PolicySnapshot:
    rng = np.random.default_rng(seed)
    heads = {
        "tool": HeadSpec("tool", options, feature_buckets=buckets, temperature=temperature),
        "pick": HeadSpec("pick", (), feature_buckets=buckets),
    }
    weights = {name: rng.normal(size=buckets) for name in heads}
    return PolicySnapshot("pol", 3, heads, weights)


def hand_bucket(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % buckets


def test_bucket_is_the_documented_blake2b_hash():
    for key in ["search\x1f", "answer\x1fsteps", "\x1ecost", "ünïcode"]:
        for buckets in (16, 4096, 1 << 22):
            assert bucket(key, buckets) == hand_bucket(key, buckets)
    # a fixed value, so a change of the formula anywhere (digest size, byte order) fails loudly
    digest = hashlib.blake2b(b"search\x1f", digest_size=8).digest()
    assert bucket("search\x1f", 4096) == (digest[0] | (digest[1] << 8)) & 4095


def test_logit_of_one_decision_computed_by_hand():
    policy = snapshot(seed=1, temperature=0.5)
    weights = policy.weights["tool"]
    features = {"steps": 2.0, "has_number": 1.0}
    decision = policy.decide(DecisionRequest("tool", features, greedy=True))
    logits = []
    for option in TOOLS:
        # bias, then context features crossed with the option, in name order
        total = weights[hand_bucket(option + "\x1f", 64)] * 1.0
        total += weights[hand_bucket(option + "\x1f" + "has_number", 64)] * 1.0
        total += weights[hand_bucket(option + "\x1f" + "steps", 64)] * 2.0
        logits.append(total / 0.5)
    expected = np.exp(np.array(logits) - max(logits))
    expected /= expected.sum()
    assert np.allclose(decision.probabilities, expected, rtol=1e-12, atol=0)
    assert decision.chosen_index == int(np.argmax(logits))
    assert decision.log_prob == pytest.approx(math.log(expected[decision.chosen_index]), rel=1e-12)


def test_option_features_are_shared_across_options():
    rows = option_rows(["a", "b"], {"x": 3.0}, [{"cost": 2.0}, {"cost": 5.0}], 4096)
    (a_indices, a_values), (b_indices, b_values) = rows
    shared = hand_bucket("\x1ecost", 4096)
    assert a_indices == [hand_bucket("a\x1f", 4096), hand_bucket("a\x1fx", 4096), shared]
    assert b_indices == [hand_bucket("b\x1f", 4096), hand_bucket("b\x1fx", 4096), shared]
    assert a_values == [1.0, 3.0, 2.0] and b_values == [1.0, 3.0, 5.0]

    # a policy whose only non-zero weight is the shared `cost` weight prefers the cheaper candidate
    # whatever its name, and the distribution follows softmax(w * cost)
    head = HeadSpec("pick", (), feature_buckets=4096)
    weights = np.zeros(4096)
    weights[shared] = -1.0
    policy = PolicySnapshot("p", 1, {"pick": head}, {"pick": weights})
    decision = policy.decide(
        DecisionRequest(
            "pick", {}, options=("x", "y"), option_features=({"cost": 2.0}, {"cost": 1.0}), greedy=True
        )
    )
    assert decision.chosen == "y"
    assert np.allclose(decision.probabilities, [1 / (1 + math.e), math.e / (1 + math.e)])


def test_probabilities_sum_to_one_and_log_prob_is_exact():
    policy = snapshot(seed=2, temperature=0.7)
    for seed in range(20):
        decision = policy.decide(DecisionRequest("tool", {"a": float(seed), "b": -1.5}, seed=seed))
        assert math.fsum(decision.probabilities) == pytest.approx(1.0, abs=1e-12)
        assert decision.log_prob == pytest.approx(
            math.log(decision.probabilities[decision.chosen_index]), abs=1e-12
        )
        assert decision.chosen == decision.options[decision.chosen_index]
        assert decision.policy == trajectory_pb2.PolicyRef(policy_id="pol", version=3)
        assert decision.HasField("timestamp") and not decision.greedy
    # extreme logits stay exact (no overflow, no log(0))
    huge = snapshot(seed=3)
    with pytest.raises(ValueError):  # read-only: nobody can change a shared snapshot
        huge.weights["tool"][0] = 1.0
    decision = huge.decide(DecisionRequest("tool", {"big": 1e6}, greedy=True))
    assert math.isfinite(decision.log_prob) and decision.log_prob <= 0.0


def test_greedy_takes_argmax_with_ties_to_the_first():
    head = HeadSpec("pick", (), feature_buckets=16)
    zeros = PolicySnapshot("p", 1, {"pick": head}, {"pick": np.zeros(16)})
    decision = zeros.decide(DecisionRequest("pick", {"x": 1.0}, options=("c", "b", "a"), greedy=True))
    assert decision.chosen_index == 0 and decision.greedy
    assert np.allclose(decision.probabilities, [1 / 3] * 3)

    weights = np.zeros(16)
    weights[bucket("b\x1f", 16)] = 2.0
    favour_b = PolicySnapshot("p", 1, {"pick": head}, {"pick": weights})
    assert favour_b.decide(DecisionRequest("pick", {}, options=("c", "b", "a"), greedy=True)).chosen == "b"


def test_seeded_sampling_is_reproducible_and_matches_the_probabilities():
    policy = snapshot(seed=4, temperature=2.0)
    request = DecisionRequest("tool", {"q": 0.3}, seed=12345)
    first = policy.decide(request)
    assert all(policy.decide(request).chosen_index == first.chosen_index for _ in range(5))
    counts = np.zeros(len(TOOLS))
    draws = 6000
    for seed in range(draws):
        counts[policy.decide(DecisionRequest("tool", {"q": 0.3}, seed=seed)).chosen_index] += 1
    probabilities = np.array(first.probabilities)
    assert probabilities.min() > 0.05  # a distribution that actually tests sampling
    # 5 standard errors: a sampler that ignored the distribution fails, a correct one never does
    tolerance = 5 * np.sqrt(probabilities * (1 - probabilities) / draws)
    assert np.all(np.abs(counts / draws - probabilities) < tolerance)
    # unseeded sampling also draws every option
    unseeded = {policy.decide(DecisionRequest("tool", {"q": 0.3})).chosen for _ in range(300)}
    assert unseeded == set(TOOLS)


def test_encode_batch_and_log_probabilities_agree_with_decide():
    policy = snapshot(seed=5, temperature=0.8)
    decisions = [
        policy.decide(DecisionRequest("tool", {"a": 1.0, "b": float(i)}, seed=i)) for i in range(4)
    ] + [
        policy.decide(
            DecisionRequest(
                "tool", {"c": 2.0}, option_features=({"u": 1.0}, {}, {"u": -1.0, "v": 0.5}), seed=9
            )
        )
    ]
    batch = encode_batch(policy.heads["tool"], decisions)
    assert batch.indices.shape[:2] == (5, 3) and batch.option_mask.all()
    assert batch.temperature == 0.8
    assert list(batch.chosen) == [d.chosen_index for d in decisions]
    log_probs = log_probabilities(policy.weights["tool"], batch)
    for row, decision in zip(log_probs, decisions, strict=True):
        assert np.allclose(np.exp(row), decision.probabilities, rtol=1e-12, atol=1e-15)
        assert row[decision.chosen_index] == pytest.approx(decision.log_prob, abs=1e-12)

    # candidates of different counts are padded and masked
    pick = policy.heads["pick"]
    ragged = [
        policy.decide(DecisionRequest("pick", {"x": 1.0}, options=("a", "b"), seed=1)),
        policy.decide(DecisionRequest("pick", {}, options=("a", "b", "c", "d"), seed=2)),
    ]
    batch = encode_batch(pick, ragged)
    assert batch.option_mask.tolist() == [[True, True, False, False], [True] * 4]
    log_probs = log_probabilities(policy.weights["pick"], batch)
    assert np.isneginf(log_probs[0, 2:]).all()
    assert np.allclose(np.exp(log_probs[0, :2]), ragged[0].probabilities)
    assert np.allclose(np.exp(log_probs[1]).sum(), 1.0)


def test_encode_batch_rejects_unusable_recorded_decisions():
    head = HeadSpec("pick", (), feature_buckets=16)
    good = trajectory_pb2.Decision(head="pick", options=["a", "b"], chosen_index=1, chosen="b")
    cases = {
        "decisions[1].chosen_index": trajectory_pb2.Decision(head="pick", options=["a"], chosen_index=3),
        "decisions[1].chosen": trajectory_pb2.Decision(
            head="pick", options=["a", "b"], chosen_index=0, chosen="b"
        ),
        "decisions[1].options": trajectory_pb2.Decision(head="pick"),
        "decisions[1].options[1]": trajectory_pb2.Decision(head="pick", options=["a", "a"]),
        "decisions[1].option_features": trajectory_pb2.Decision(
            head="pick", options=["a", "b"], option_features=[trajectory_pb2.FeatureMap()]
        ),
        "decisions[1].features[x]": trajectory_pb2.Decision(
            head="pick", options=["a"], features={"x": math.inf}
        ),
        "decisions[1].option_features[1][c]": trajectory_pb2.Decision(
            head="pick",
            options=["a", "b"],
            option_features=[trajectory_pb2.FeatureMap(), trajectory_pb2.FeatureMap(values={"c": -math.inf})],
        ),
        "decisions[1].log_prob": trajectory_pb2.Decision(head="pick", options=["a"], log_prob=math.nan),
    }
    for field, bad in cases.items():
        with pytest.raises(InvalidArgument) as caught:
            encode_batch(head, [good, bad])
        assert caught.value.field == field


def test_decide_rejects_bad_requests_naming_the_field():
    policy = snapshot()
    cases = [
        (DecisionRequest("pick", {}), "options"),
        (DecisionRequest("pick", {}, options=("a", "a")), "options[1]"),
        (DecisionRequest("pick", {}, options=("a", "")), "options[1]"),
        (DecisionRequest("tool", {}, options=("answer", "search", "calculator")), "options"),
        (DecisionRequest("tool", {}, options=("search", "search")), "options"),
        (DecisionRequest("tool", {}, options=("search", "nope")), "options"),
        (DecisionRequest("tool", {}, option_features=({},)), "option_features"),
        (DecisionRequest("tool", {"x": math.nan}), "features[x]"),
        (DecisionRequest("tool", {"x": math.inf}), "features[x]"),
        (DecisionRequest("tool", {"x": "high"}), "features"),
        (DecisionRequest("tool", {}, option_features=({}, {"c": -math.inf}, {})), "option_features[1][c]"),
    ]
    for request, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            policy.decide(request)
        assert caught.value.field == field, request
    with pytest.raises(NotFound, match="'nope'"):
        policy.decide(DecisionRequest("nope", {}))
    # the fixed options may be repeated exactly
    assert policy.decide(DecisionRequest("tool", {}, options=TOOLS, greedy=True)).options == list(TOOLS)


def test_heads_from_proto_validates_and_fills_defaults():
    heads = heads_from_proto([trainer_pb2.DecisionHead(name="tool", options=["a", "b"])])
    assert heads["tool"] == HeadSpec("tool", ("a", "b"), 4096, 1.0, "")
    bad = {
        "heads": [],
        "heads[0].name": [trainer_pb2.DecisionHead()],
        "heads[1].name": [trainer_pb2.DecisionHead(name="a"), trainer_pb2.DecisionHead(name="a")],
        "heads[0].feature_buckets": [trainer_pb2.DecisionHead(name="a", feature_buckets=100)],
        "heads[0].options[1]": [trainer_pb2.DecisionHead(name="a", options=["x", "x"])],
        "heads[0].options[0]": [trainer_pb2.DecisionHead(name="a", options=[""])],
        "heads[0].temperature": [trainer_pb2.DecisionHead(name="a", temperature=-1.0)],
    }
    for buckets in (8, 1 << 23, -16):
        with pytest.raises(InvalidArgument, match="feature_buckets"):
            heads_from_proto([trainer_pb2.DecisionHead(name="a", feature_buckets=buckets)])
    for temperature in (math.nan, math.inf):
        with pytest.raises(InvalidArgument, match="temperature"):
            heads_from_proto([trainer_pb2.DecisionHead(name="a", temperature=temperature)])
    for field, messages in bad.items():
        with pytest.raises(InvalidArgument) as caught:
            heads_from_proto(messages)
        assert caught.value.field == field
    assert (
        heads_from_proto([trainer_pb2.DecisionHead(name="a", feature_buckets=16)])["a"].feature_buckets == 16
    )
    assert heads_from_proto([trainer_pb2.DecisionHead(name="a", feature_buckets=1 << 22)])[
        "a"
    ].feature_buckets


def test_snapshot_proto_round_trip_and_checksum():
    policy = snapshot(seed=6)
    mine = {"pick": np.zeros(16)}
    PolicySnapshot("p", 1, {"pick": HeadSpec("pick", feature_buckets=16)}, mine)
    mine["pick"][0] = 1.0  # the caller's array is neither frozen nor shared
    message = policy.to_proto(include_parameters=True)
    assert [p.head for p in message.parameters] == ["tool", "pick"]
    expected = hashlib.sha256(
        policy.weights["pick"].astype("<f8").tobytes() + policy.weights["tool"].astype("<f8").tobytes()
    ).hexdigest()
    assert message.parameters_sha256 == expected == parameters_sha256(policy.weights)
    back = PolicySnapshot.from_proto(message)
    assert back.heads == policy.heads and back.version == 3
    assert all(np.array_equal(back.weights[n], policy.weights[n]) for n in policy.heads)
    assert not policy.to_proto().parameters

    with pytest.raises(InvalidArgument, match="include_parameters"):
        PolicySnapshot.from_proto(policy.to_proto())
    tampered = policy.to_proto(include_parameters=True)
    tampered.parameters[0].weights[0] += 1.0
    with pytest.raises(InvalidArgument) as caught:
        PolicySnapshot.from_proto(tampered)
    assert caught.value.field == "policy.parameters_sha256"
    short = policy.to_proto(include_parameters=True)
    del short.parameters[0].weights[-1]
    with pytest.raises(InvalidArgument, match="64 weights"):
        PolicySnapshot.from_proto(short)


async def test_local_decider_and_request_conversion():
    policy = snapshot(seed=7)
    decider = LocalDecider(policy)
    request = DecisionRequest(
        "pick", {"x": 1.0}, options=("a", "b"), option_features=({"c": 1.0}, {}), seed=42
    )
    decision = await decider(request)
    direct = policy.decide(request)
    direct.timestamp.CopyFrom(decision.timestamp)
    assert decision == direct
    message = decide_request(trajectory_pb2.PolicyRef(policy_id="pol", version=3), request)
    assert message.mode == trainer_pb2.DECISION_MODE_SAMPLE and message.seed == 42
    back = decision_request_from_proto(message)
    again = policy.decide(back)
    assert (again.chosen_index, again.log_prob, list(again.probabilities)) == (
        decision.chosen_index,
        decision.log_prob,
        list(decision.probabilities),
    )
    unseeded = decision_request_from_proto(trainer_pb2.DecideRequest(head="tool", mode=2))
    assert unseeded.seed is None and unseeded.greedy
