"""GRPO math: the loss against a per-decision reference, the analytic gradient against finite
differences, clipping, the optimizer, and validation of settings and optimizer state."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cohort.api.trainer.v1 import trainer_pb2
from cohort.learning import (
    NON_FINITE_UPDATE,
    AdamState,
    DecisionBatch,
    GrpoSettings,
    HeadBatch,
    grpo_loss,
    grpo_update,
    log_probabilities,
)
from cohort.platform.errors import FailedPrecondition, InvalidArgument
from cohort.services.trainer.convert import (
    adam_state_from_proto,
    adam_state_to_proto,
    grpo_settings_from_proto,
)

BUCKETS = 32  # small, so decisions and options share buckets and the scatter-add must sum them


def random_batch(
    rng: np.random.Generator, decisions: int, options: int, features: int, temperature=1.0, pad_options=True
):
    """Random decisions with padded options (masked, index 0, value 0) and padded feature slots."""
    indices = rng.integers(0, BUCKETS, size=(decisions, options, features))
    values = rng.normal(size=(decisions, options, features))
    values[:, :, 0] = 1.0  # the option's bias feature
    padded_slots = rng.random((decisions, options, features)) < 0.2
    padded_slots[:, :, 0] = False
    indices[padded_slots], values[padded_slots] = 0, 0.0
    offered = rng.integers(1, options + 1, size=decisions) if pad_options else np.full(decisions, options)
    option_mask = np.arange(options)[None, :] < offered[:, None]
    indices[~option_mask], values[~option_mask] = 0, 0.0
    chosen = rng.integers(0, offered)
    return DecisionBatch(indices, values, option_mask, chosen, temperature)


def reference_log_probs(weights: np.ndarray, batch) -> np.ndarray:
    """log pi per decision and option by plain loops (the definition, not the vectorized code)."""
    decisions, options, _ = batch.indices.shape
    result = np.full((decisions, options), -np.inf)
    for d in range(decisions):
        logits = {
            o: sum(weights[i] * v for i, v in zip(batch.indices[d, o], batch.values[d, o], strict=True))
            / batch.temperature
            for o in range(options)
            if batch.option_mask[d, o]
        }
        top = max(logits.values())
        normalizer = top + math.log(sum(math.exp(z - top) for z in logits.values()))
        for o, z in logits.items():
            result[d, o] = z - normalizer
    return result


def reference_loss(weights, batches, settings: GrpoSettings) -> float:
    """The GRPO loss per decision, written term by term from the clipped objective."""
    total, count = 0.0, 0
    for head, hb in batches.items():
        log_probs = reference_log_probs(weights[head], hb.batch)
        ref = None
        if hb.reference_weights is not None and settings.kl_beta > 0:
            ref = reference_log_probs(hb.reference_weights, hb.batch)
        for d in range(len(hb.advantage)):
            advantage = hb.advantage[d]
            if settings.positive_advantage_only and advantage <= 0:
                continue
            chosen = hb.batch.chosen[d]
            ratio = math.exp(log_probs[d, chosen] - hb.old_log_prob[d])
            clipped = min(max(ratio, 1 - settings.clip_epsilon_low), 1 + settings.clip_epsilon_high)
            loss = -min(ratio * advantage, clipped * advantage)
            if ref is not None:
                r = ref[d, chosen] - log_probs[d, chosen]
                loss += settings.kl_beta * (math.exp(r) - r - 1)
            offered = log_probs[d][hb.batch.option_mask[d]]
            entropy = -sum(math.exp(lp) * lp for lp in offered)
            loss -= settings.entropy_coefficient * entropy
            total += loss
            count += 1
    return total / count


def make_problem(
    seed=0, *, heads=("tool", "route", "plan"), decisions=6, options=5, features=4, pad_options=True
):
    """Weights, and batches whose old log-probs come from nearby weights (ratios on both sides of the
    clip range), with the reference policy further away."""
    rng = np.random.default_rng(seed)
    weights, batches = {}, {}
    for n, head in enumerate(heads):
        w = rng.normal(scale=0.5, size=BUCKETS)
        temperature = [1.0, 0.7, 1.5][n % 3]
        batch = random_batch(rng, decisions + n, options, features, temperature, pad_options)
        old = w + rng.normal(scale=0.4, size=BUCKETS)
        old_log_prob = reference_log_probs(old, batch)[np.arange(len(batch.chosen)), batch.chosen]
        advantage = rng.normal(size=len(batch.chosen))
        reference = w + rng.normal(scale=0.5, size=BUCKETS)
        weights[head] = w
        batches[head] = HeadBatch(batch, old_log_prob, advantage, reference)
    return weights, batches


def finite_difference_gradient(weights, batches, settings, step=1e-6):
    gradients = {}
    for head, w in weights.items():
        gradient = np.zeros_like(w)
        for i in range(w.size):
            plus = {**weights, head: w.copy()}
            minus = {**weights, head: w.copy()}
            plus[head][i] += step
            minus[head][i] -= step
            gradient[i] = (
                grpo_loss(plus, batches, settings).loss - grpo_loss(minus, batches, settings).loss
            ) / (2 * step)
        gradients[head] = gradient
    return gradients


def ratios_away_from_kinks(weights, batches, settings):
    """The surrogate is piecewise smooth; finite differences need every ratio off the clip edges."""
    for head, hb in batches.items():
        log_probs = reference_log_probs(weights[head], hb.batch)
        ratio = np.exp(log_probs[np.arange(len(hb.batch.chosen)), hb.batch.chosen] - hb.old_log_prob)
        for edge in (1 - settings.clip_epsilon_low, 1 + settings.clip_epsilon_high):
            assert np.all(np.abs(ratio - edge) > 1e-4)


def zero_advantage(batches):
    return {h: replace(hb, advantage=np.zeros_like(hb.advantage)) for h, hb in batches.items()}


CONFIGURATIONS = {
    "surrogate": (GrpoSettings(), False),
    "kl_alone": (GrpoSettings(kl_beta=0.3), True),
    "entropy_alone": (GrpoSettings(entropy_coefficient=0.2), True),
    "all_terms": (GrpoSettings(kl_beta=0.3, entropy_coefficient=0.2), False),
    "all_terms_every_option_offered": (GrpoSettings(kl_beta=0.3, entropy_coefficient=0.2), False),
    "all_terms_positive_only": (
        GrpoSettings(kl_beta=0.3, entropy_coefficient=0.2, positive_advantage_only=True),
        False,
    ),
}


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_loss_and_gradient_match_definition_and_finite_differences(name):
    settings, without_surrogate = CONFIGURATIONS[name]
    weights, batches = make_problem(seed=7, pad_options="every_option_offered" not in name)
    assert all(hb.batch.option_mask.all() for hb in batches.values()) == ("every_option_offered" in name)
    if without_surrogate:  # A = 0 zeroes the surrogate, leaving the term under test alone
        batches = zero_advantage(batches)
    ratios_away_from_kinks(weights, batches, settings)

    terms = grpo_loss(weights, batches, settings)

    assert terms.loss == pytest.approx(reference_loss(weights, batches, settings), rel=1e-10, abs=1e-12)
    numeric = finite_difference_gradient(weights, batches, settings)
    for head in weights:
        assert np.linalg.norm(numeric[head]) > 1e-3  # the term under test does move this head
        np.testing.assert_allclose(terms.gradients[head], numeric[head], rtol=1e-5, atol=1e-8)


def test_problem_has_clipped_and_unclipped_decisions():
    """The finite-difference problem exercises both branches of the clipped surrogate."""
    weights, batches = make_problem(seed=7)
    terms = grpo_loss(weights, batches, GrpoSettings())
    assert 0 < terms.clip_fraction < 1


def test_masked_padding_does_not_change_anything():
    """Extra padding options and padding feature slots leave the loss and gradient as they were."""
    weights, batches = make_problem(seed=3, heads=("tool",))
    hb = batches["tool"]
    b = hb.batch
    d, o, k = b.indices.shape
    indices = np.zeros((d, o + 2, k + 3), dtype=np.int64)
    values = np.zeros((d, o + 2, k + 3))
    indices[:, :o, :k], values[:, :o, :k] = b.indices, b.values
    mask = np.zeros((d, o + 2), dtype=bool)
    mask[:, :o] = b.option_mask
    padded = {"tool": replace(hb, batch=DecisionBatch(indices, values, mask, b.chosen, b.temperature))}
    settings = GrpoSettings(kl_beta=0.1, entropy_coefficient=0.1)
    base, wide = grpo_loss(weights, batches, settings), grpo_loss(weights, padded, settings)
    assert wide.loss == pytest.approx(base.loss, rel=1e-12)
    np.testing.assert_allclose(wide.gradients["tool"], base.gradients["tool"], rtol=1e-12, atol=1e-15)


def one_decision(ratio: float, advantage: float):
    """A two-option decision whose chosen option's ratio to the old policy is `ratio`."""
    indices = np.array([[[1, 2], [3, 4]]])
    values = np.array([[[1.0, 0.5], [1.0, -0.5]]])
    batch = DecisionBatch(indices, values, np.array([[True, True]]), np.array([0]), 1.0)
    weights = {"h": np.linspace(-0.3, 0.4, 8)}
    log_prob = reference_log_probs(weights["h"], batch)[0, 0]
    old = np.array([log_prob - math.log(ratio)])
    return weights, {"h": HeadBatch(batch, old, np.array([advantage]), None)}


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.5, 1.0, True),  # above 1 + eps_high, pushed up: clipped
        (0.5, -1.0, True),  # below 1 - eps_low, pushed down: clipped
        (1.5, -1.0, False),  # above the range but pushed down: the gradient flows
        (0.5, 1.0, False),  # below the range but pushed up: the gradient flows
        (1.1, 1.0, False),
        (0.9, -1.0, False),
    ],
)
def test_clipped_decisions_carry_no_gradient(ratio, advantage, clipped):
    weights, batches = one_decision(ratio, advantage)
    terms = grpo_loss(weights, batches, GrpoSettings())
    assert terms.clip_fraction == (1.0 if clipped else 0.0)
    if clipped:
        assert not np.any(terms.gradients["h"])
        high, low = 1 + 0.28, 1 - 0.2
        assert terms.loss == pytest.approx(-(high if advantage > 0 else low) * advantage)
    else:
        assert np.linalg.norm(terms.gradients["h"]) > 1e-3
        assert terms.loss == pytest.approx(-ratio * advantage)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_a_decision_from_a_far_off_policy_stays_finite(advantage):
    """A ratio of e^500 is capped: the loss stays finite and the decision adds no gradient."""
    weights, batches = one_decision(1.0, advantage)
    hb = batches["h"]
    far = {"h": replace(hb, old_log_prob=hb.old_log_prob - 500)}
    result = grpo_update(weights, far, AdamState.zeros(weights), GrpoSettings(inner_epochs=2))
    assert math.isfinite(result.loss) and result.grad_norm == 0.0
    np.testing.assert_array_equal(result.weights["h"], weights["h"])


def test_positive_advantage_only_drops_the_other_decisions():
    weights, batches = make_problem(seed=11)
    batches = {
        h: replace(hb, advantage=np.where(np.arange(hb.advantage.size) < 2, 0.0, hb.advantage))
        for h, hb in batches.items()
    }
    settings = GrpoSettings(positive_advantage_only=True, kl_beta=0.2, entropy_coefficient=0.1)
    kept = {}
    for head, hb in batches.items():
        keep = hb.advantage > 0
        b = hb.batch
        kept[head] = HeadBatch(
            DecisionBatch(
                b.indices[keep], b.values[keep], b.option_mask[keep], b.chosen[keep], b.temperature
            ),
            hb.old_log_prob[keep],
            hb.advantage[keep],
            hb.reference_weights,
        )
    filtered = grpo_update(weights, batches, AdamState.zeros(weights), settings)
    explicit = grpo_update(
        weights, kept, AdamState.zeros(weights), replace(settings, positive_advantage_only=False)
    )
    assert filtered.decisions == sum(int((hb.advantage > 0).sum()) for hb in batches.values())
    assert filtered.decisions < sum(len(hb.advantage) for hb in batches.values())
    assert filtered.loss == pytest.approx(explicit.loss, rel=1e-12)
    for head in weights:
        np.testing.assert_allclose(filtered.weights[head], explicit.weights[head], rtol=1e-12)


def test_no_decisions_left_leaves_weights_and_optimizer_unchanged():
    weights, batches = make_problem(seed=2)
    negative = {h: replace(hb, advantage=-np.abs(hb.advantage) - 0.1) for h, hb in batches.items()}
    optimizer = AdamState.zeros(weights)
    result = grpo_update(weights, negative, optimizer, GrpoSettings(positive_advantage_only=True))
    assert result.decisions == 0 and result.optimizer.step == 0
    for head in weights:
        np.testing.assert_array_equal(result.weights[head], weights[head])


def test_global_gradient_norm_is_clipped_across_heads():
    weights, batches = make_problem(seed=5)
    big = {h: replace(hb, advantage=hb.advantage * 50) for h, hb in batches.items()}
    settings = GrpoSettings(inner_epochs=1, max_grad_norm=0.5)
    gradients = grpo_loss(weights, big, settings).gradients
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in gradients.values()))
    assert norm > 0.5

    result = grpo_update(weights, big, AdamState.zeros(weights), settings)

    assert result.grad_norm == pytest.approx(norm, rel=1e-12)
    assert result.grad_norm_clipped == pytest.approx(0.5, rel=1e-12)
    # After one step the first moment is (1 - beta1) times the clipped gradient.
    for head, g in gradients.items():
        np.testing.assert_allclose(result.optimizer.first_moments[head], 0.1 * g * 0.5 / norm, rtol=1e-10)

    small = grpo_update(weights, batches, AdamState.zeros(weights), replace(settings, max_grad_norm=1e6))
    assert small.grad_norm == small.grad_norm_clipped


def test_adam_matches_a_hand_written_reference():
    weights, batches = make_problem(seed=9)
    settings = GrpoSettings(
        learning_rate=0.03, inner_epochs=3, adam_beta1=0.8, adam_beta2=0.99, kl_beta=0.1, max_grad_norm=0.7
    )
    rng = np.random.default_rng(1)
    start = AdamState(
        step=4,
        first_moments={h: rng.normal(scale=0.01, size=BUCKETS) for h in weights},
        second_moments={h: rng.random(BUCKETS) * 1e-3 for h in weights},
    )

    expected = {h: w.copy() for h, w in weights.items()}
    m = {h: v.copy() for h, v in start.first_moments.items()}
    v = {h: x.copy() for h, x in start.second_moments.items()}
    t = start.step
    for _ in range(3):
        gradients = grpo_loss(expected, batches, settings).gradients
        norm = math.sqrt(sum(float(np.sum(g**2)) for g in gradients.values()))
        scale = min(1.0, 0.7 / norm)
        t += 1
        for h, g in gradients.items():
            g = g * scale
            m[h] = 0.8 * m[h] + 0.2 * g
            v[h] = 0.99 * v[h] + 0.01 * g**2
            m_hat, v_hat = m[h] / (1 - 0.8**t), v[h] / (1 - 0.99**t)
            expected[h] = expected[h] - 0.03 * m_hat / (np.sqrt(v_hat) + 1e-8)

    result = grpo_update(weights, batches, start, settings)

    assert result.optimizer.step == 7
    for h in weights:
        np.testing.assert_allclose(result.weights[h], expected[h], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(result.optimizer.first_moments[h], m[h], rtol=1e-12, atol=1e-16)
        np.testing.assert_allclose(result.optimizer.second_moments[h], v[h], rtol=1e-12, atol=1e-18)
    assert start.step == 4  # the input state is not modified


def test_heads_without_decisions_take_no_step():
    weights, batches = make_problem(seed=4)
    weights["idle"] = np.ones(BUCKETS)
    optimizer = AdamState.zeros(weights)
    optimizer.first_moments["idle"] += 0.5
    result = grpo_update(weights, batches, optimizer, GrpoSettings())
    np.testing.assert_array_equal(result.weights["idle"], weights["idle"])
    np.testing.assert_array_equal(result.optimizer.first_moments["idle"], optimizer.first_moments["idle"])


def test_update_norm_is_the_norm_of_the_weight_change_over_every_head():
    weights, batches = make_problem(seed=14)
    weights["idle"] = np.ones(BUCKETS)  # no decisions: keeps its weights despite its Adam momentum
    optimizer = AdamState.zeros(weights)
    optimizer.first_moments["idle"] += 0.5
    result = grpo_update(weights, batches, optimizer, GrpoSettings(inner_epochs=3, kl_beta=0.1))
    change = np.concatenate([result.weights[head] - weights[head] for head in sorted(weights)])
    assert result.update_norm > 0
    assert result.update_norm == pytest.approx(float(np.linalg.norm(change)), rel=1e-12)


def test_update_norm_is_zero_when_nothing_moves():
    weights, batches = make_problem(seed=2)
    negative = {h: replace(hb, advantage=-np.abs(hb.advantage) - 0.1) for h, hb in batches.items()}
    result = grpo_update(
        weights, negative, AdamState.zeros(weights), GrpoSettings(positive_advantage_only=True)
    )
    assert result.update_norm == 0.0


def test_update_is_deterministic_and_leaves_inputs_alone():
    weights, batches = make_problem(seed=6)
    before = {h: w.copy() for h, w in weights.items()}
    settings = GrpoSettings(kl_beta=0.1, entropy_coefficient=0.05)
    first = grpo_update(weights, batches, AdamState.zeros(weights), settings)
    second = grpo_update(weights, batches, AdamState.zeros(weights), settings)
    for h in weights:
        np.testing.assert_array_equal(first.weights[h], second.weights[h])
        np.testing.assert_array_equal(weights[h], before[h])
        assert not np.array_equal(first.weights[h], before[h])
    assert (first.loss, first.kl, first.entropy, first.clip_fraction, first.grad_norm) == (
        second.loss,
        second.kl,
        second.entropy,
        second.clip_fraction,
        second.grad_norm,
    )


def test_metrics_of_the_last_epoch():
    weights, batches = make_problem(seed=8)
    settings = GrpoSettings(inner_epochs=1, kl_beta=0.2)
    result = grpo_update(weights, batches, AdamState.zeros(weights), settings)
    assert result.loss == pytest.approx(reference_loss(weights, batches, settings), rel=1e-10)
    entropies, kls = [], []
    for head, hb in batches.items():
        lp = reference_log_probs(weights[head], hb.batch)
        ref = reference_log_probs(hb.reference_weights, hb.batch)
        rows, chosen = np.arange(len(hb.batch.chosen)), hb.batch.chosen
        entropies += list(
            -np.where(hb.batch.option_mask, np.exp(lp) * np.where(hb.batch.option_mask, lp, 0), 0).sum(1)
        )
        r = ref[rows, chosen] - lp[rows, chosen]
        kls += list(np.exp(r) - r - 1)
    assert result.entropy == pytest.approx(np.mean(entropies), rel=1e-10)
    assert result.kl == pytest.approx(np.mean(kls), rel=1e-10)
    assert result.decisions == len(entropies)
    # The KL is measured only when it is part of the loss.
    assert grpo_update(weights, batches, AdamState.zeros(weights), GrpoSettings(inner_epochs=1)).kl == 0.0


def test_kl_to_an_identical_reference_is_zero_with_zero_gradient():
    weights, batches = make_problem(seed=12)
    same = {
        h: replace(hb, reference_weights=weights[h].copy(), advantage=np.zeros_like(hb.advantage))
        for h, hb in batches.items()
    }
    terms = grpo_loss(weights, same, GrpoSettings(kl_beta=1.0))
    assert terms.kl == pytest.approx(0.0, abs=1e-15)
    for g in terms.gradients.values():
        np.testing.assert_allclose(g, 0.0, atol=1e-15)


def test_repeated_updates_favour_positive_advantage_choices():
    """On-policy rounds on one batch: chosen options with A > 0 gain probability, A < 0 lose it."""
    rng = np.random.default_rng(21)
    batch = random_batch(rng, 40, 4, 3)
    advantage = np.where(rng.random(40) < 0.5, 1.0, -1.0)
    weights = {"h": np.zeros(BUCKETS)}
    optimizer = AdamState.zeros(weights)
    rows = np.arange(40)

    def chosen_probability(w):
        return np.exp(reference_log_probs(w, batch)[rows, batch.chosen])

    start = chosen_probability(weights["h"])
    for _ in range(15):
        old = np.log(chosen_probability(weights["h"]))
        result = grpo_update(
            weights, {"h": HeadBatch(batch, old, advantage, None)}, optimizer, GrpoSettings()
        )
        weights, optimizer = result.weights, result.optimizer
    end = chosen_probability(weights["h"])
    positive, negative = advantage > 0, advantage < 0
    objective_start = np.sum(advantage * start)
    objective_end = np.sum(advantage * end)
    assert objective_end > objective_start + 1.0
    assert end[positive].mean() > start[positive].mean() + 0.1
    assert end[negative].mean() < start[negative].mean()


def test_settings_from_proto_defaults_and_values():
    assert grpo_settings_from_proto(trainer_pb2.GrpoConfig()) == GrpoSettings()
    config = trainer_pb2.GrpoConfig(
        learning_rate=0.01,
        clip_epsilon_low=0.1,
        clip_epsilon_high=0.3,
        kl_beta=0.05,
        entropy_coefficient=0.01,
        inner_epochs=2,
        max_grad_norm=0.5,
        positive_advantage_only=True,
        max_policy_staleness=3,
        adam_beta1=0.5,
        adam_beta2=0.9,
        seed=42,
    )
    settings = grpo_settings_from_proto(config)
    assert settings == GrpoSettings(
        learning_rate=0.01,
        clip_epsilon_low=0.1,
        clip_epsilon_high=0.3,
        kl_beta=0.05,
        entropy_coefficient=0.01,
        inner_epochs=2,
        max_grad_norm=0.5,
        positive_advantage_only=True,
        max_policy_staleness=3,
        adam_beta1=0.5,
        adam_beta2=0.9,
        seed=42,
    )
    assert GrpoSettings().max_policy_staleness == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("learning_rate", -0.1),
        ("learning_rate", math.inf),
        ("learning_rate", math.nan),
        ("clip_epsilon_low", 1.0),
        ("clip_epsilon_low", -0.1),
        ("clip_epsilon_high", 1.5),
        ("kl_beta", -1.0),
        ("kl_beta", math.nan),
        ("entropy_coefficient", -0.01),
        ("inner_epochs", -1),
        ("inner_epochs", 101),
        ("max_grad_norm", -1.0),
        ("max_grad_norm", math.inf),
        ("adam_beta1", 1.0),
        ("adam_beta1", -0.5),
        ("adam_beta2", 1.2),
        ("max_policy_staleness", -1),
        # Finite but large enough to overflow an update into NaN weights.
        ("learning_rate", 10.5),
        ("learning_rate", 1e300),
        ("kl_beta", 1e3 * 1.01),
        ("kl_beta", 1e300),
        ("entropy_coefficient", 1e305),
        ("max_grad_norm", 1e7),
        ("seed", -1),
    ],
)
def test_bad_settings_name_the_field(name, value):
    with pytest.raises(InvalidArgument) as error:
        grpo_settings_from_proto(trainer_pb2.GrpoConfig(**{name: value}))
    assert error.value.field == f"config.{name}"
    assert "must be" in error.value.description and repr(value) in error.value.description


def test_the_bounds_themselves_are_allowed_and_named_in_the_error():
    GrpoSettings(learning_rate=10, kl_beta=1e3, entropy_coefficient=1e3, max_grad_norm=1e6, seed=0)
    with pytest.raises(InvalidArgument) as error:
        GrpoSettings(learning_rate=11)
    assert "(0, 10]" in error.value.description
    with pytest.raises(InvalidArgument) as error:
        GrpoSettings(kl_beta=2e3)
    assert "[0, 1000]" in error.value.description


def overflowing_decision(scale: float):
    """One decision whose two options read the same huge feature through separate buckets."""
    indices = np.array([[[0], [1]]])
    values = np.full((1, 2, 1), scale)
    batch = DecisionBatch(indices, values, np.array([[True, True]]), np.array([0]), 1.0)
    weights = {"h": np.zeros(4)}
    return weights, {"h": HeadBatch(batch, np.array([math.log(0.5)]), np.array([1.0]), None)}


def assert_non_finite_update(call, quantity: str, epoch: int, head: str = ""):
    with pytest.raises(FailedPrecondition) as error:
        call()
    assert error.value.reason == NON_FINITE_UPDATE
    assert error.value.metadata == {"quantity": quantity, "head": head, "epoch": str(epoch)}
    assert error.value.message.startswith(f"non-finite update: the {quantity}")


def test_an_update_whose_logits_overflow_fails_naming_the_entropy():
    """Settings in range, finite features of 1e307: after one Adam step of 10 the logits overflow;
    the ratio's cap keeps the loss finite, the entropy is where the NaN shows first."""
    weights, batches = make_problem(seed=3)
    huge = {
        head: replace(
            hb, batch=replace(hb.batch, values=hb.batch.values / np.abs(hb.batch.values).max() * 1e307)
        )
        for head, hb in batches.items()
    }
    weights = {head: np.zeros_like(w) for head, w in weights.items()}
    settings = GrpoSettings(learning_rate=10, inner_epochs=3)
    assert_non_finite_update(
        lambda: grpo_update(weights, huge, AdamState.zeros(weights), settings), "entropy", 2
    )
    assert all(not np.any(w) for w in weights.values())  # the caller's arrays are untouched


def test_an_overflowing_kl_term_fails_naming_the_loss():
    weights, batches = make_problem(seed=3)
    huge = {
        head: replace(
            hb, batch=replace(hb.batch, values=hb.batch.values / np.abs(hb.batch.values).max() * 1e300)
        )
        for head, hb in batches.items()
    }
    settings = GrpoSettings(kl_beta=1e3)
    assert_non_finite_update(
        lambda: grpo_update(weights, huge, AdamState.zeros(weights), settings), "loss", 1
    )


def test_a_learning_rate_past_the_bound_would_make_nan_weights_and_is_stopped_anyway():
    """The settings' bound is the first guard; the update's own check is the second."""
    weights, batches = make_problem(seed=4)
    settings = GrpoSettings(inner_epochs=2)
    object.__setattr__(settings, "learning_rate", 1e308)  # past validation, as a future caller might
    assert_non_finite_update(
        lambda: grpo_update(weights, batches, AdamState.zeros(weights), settings), "loss", 2
    )


def test_non_finite_weights_going_in_are_named():
    weights, batches = make_problem(seed=4)
    weights["route"] = weights["route"].copy()
    weights["route"][3] = math.nan
    assert_non_finite_update(
        lambda: grpo_update(weights, batches, AdamState.zeros(weights), GrpoSettings()), "weights", 1, "route"
    )


def test_a_gradient_whose_square_overflows_still_has_a_finite_norm_and_takes_its_step():
    """Gradients of 1e200: their squares overflow, but the norm is rescaled, so the step is clipped
    to `max_grad_norm` instead of being zeroed by an infinite norm."""
    weights, batches = overflowing_decision(1e200)
    settings = GrpoSettings(inner_epochs=1)
    result = grpo_update(weights, batches, AdamState.zeros(weights), settings)
    assert result.grad_norm == pytest.approx(math.sqrt(0.5) * 1e200, rel=1e-12)
    assert result.grad_norm_clipped == pytest.approx(1.0)
    # Adam's first step moves each weight by the learning rate, against its gradient's sign.
    step = settings.learning_rate
    assert result.weights["h"][0] == pytest.approx(step) and result.weights["h"][1] == pytest.approx(-step)


def test_adam_state_proto_round_trip_and_validation():
    weights = {"a": np.zeros(4), "b": np.zeros(3)}
    state = AdamState(
        step=5,
        first_moments={"a": np.array([0.1, -0.2, 0.3, 0.0]), "b": np.array([1.0, 2.0, 3.0])},
        second_moments={"a": np.array([0.01, 0.02, 0.03, 0.0]), "b": np.array([0.5, 0.5, 0.5])},
    )
    back = adam_state_from_proto(adam_state_to_proto(state), weights)
    assert back.step == 5
    for h in weights:
        np.testing.assert_array_equal(back.first_moments[h], state.first_moments[h])
        np.testing.assert_array_equal(back.second_moments[h], state.second_moments[h])

    fresh = adam_state_from_proto(trainer_pb2.OptimizerState(), weights)
    assert fresh.step == 0 and all(not m.any() for m in fresh.first_moments.values())

    short = adam_state_to_proto(state)
    del short.second_moments[1].weights[-1]
    unknown = adam_state_to_proto(state)
    unknown.first_moments[0].head = "c"
    negative = adam_state_to_proto(state)
    negative.step = -1
    for bad in (short, unknown, negative):
        with pytest.raises(InvalidArgument) as error:
            adam_state_from_proto(bad, weights)
        assert error.value.field.startswith("optimizer_state")


def _bad_batch(case: str) -> dict:
    _, batches = make_problem(seed=1, heads=("tool",))
    hb = batches["tool"]
    b = hb.batch
    if case == "unknown head":
        return {"other": hb}
    if case == "chosen option not offered":
        mask = b.option_mask.copy()
        mask[0, b.chosen[0]] = False
        return {"tool": replace(hb, batch=replace(b, option_mask=mask))}
    if case == "index out of range":
        return {"tool": replace(hb, batch=replace(b, indices=b.indices + BUCKETS))}
    if case == "zero temperature":
        return {"tool": replace(hb, batch=replace(b, temperature=0.0))}
    if case == "advantage length":
        return {"tool": replace(hb, advantage=hb.advantage[:-1])}
    if case == "non-finite advantage":
        return {"tool": replace(hb, advantage=np.full_like(hb.advantage, np.nan))}
    if case == "positive old log-prob":
        return {"tool": replace(hb, old_log_prob=np.abs(hb.old_log_prob) + 0.1)}
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "unknown head",
        "chosen option not offered",
        "index out of range",
        "zero temperature",
        "advantage length",
        "non-finite advantage",
        "positive old log-prob",
    ],
)
def test_bad_batches_are_rejected(case):
    weights, _ = make_problem(seed=1, heads=("tool",))
    with pytest.raises(InvalidArgument) as error:
        grpo_update(weights, _bad_batch(case), AdamState.zeros(weights), GrpoSettings(kl_beta=0.1))
    assert error.value.field.startswith("batches[")


def test_log_probabilities_agree_with_the_policy_package():
    """The reference loops here and `cohort.learning.log_probabilities` (what Decide records) agree."""
    weights, batches = make_problem(seed=13, heads=("tool",))
    b = batches["tool"].batch
    np.testing.assert_allclose(
        log_probabilities(weights["tool"], b), reference_log_probs(weights["tool"], b), rtol=1e-12
    )


def test_on_policy_ratios_are_one():
    """With old log-probs from the policy package at the same weights, every ratio is exactly 1."""
    weights, batches = make_problem(seed=14)
    on_policy = {}
    for head, hb in batches.items():
        b = hb.batch
        recorded = log_probabilities(weights[head], b)[np.arange(len(b)), b.chosen]
        on_policy[head] = replace(hb, old_log_prob=recorded)
    terms = grpo_loss(weights, on_policy, GrpoSettings())
    advantages = np.concatenate([hb.advantage for hb in on_policy.values()])
    assert terms.clip_fraction == 0.0
    assert terms.loss == pytest.approx(-advantages.mean(), rel=1e-12)


def test_staleness_zero_is_asked_for_only_by_setting_it():
    # `max_policy_staleness` has presence: 0 means strictly on-policy, unset means the default 1.
    assert grpo_settings_from_proto(trainer_pb2.GrpoConfig()).max_policy_staleness == 1
    assert grpo_settings_from_proto(trainer_pb2.GrpoConfig(max_policy_staleness=0)).max_policy_staleness == 0
    # other zero fields still mean "the default"
    assert grpo_settings_from_proto(trainer_pb2.GrpoConfig(inner_epochs=0)).inner_epochs == 4
