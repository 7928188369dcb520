"""Exact GRPO (group relative policy optimization) for decision-head policies, vectorized.

The objective is GRPO's clipped surrogate (Shao et al., 2024, "DeepSeekMath", section 4.1) with
DAPO's decoupled clip range (Yu et al., 2025, "clip-higher": `eps_high` above `eps_low` lets the
ratio of an option that paid off rise further before it is clipped, so rarely chosen options can
still gain probability and the entropy does not collapse), the k3 estimator of the KL divergence to
a reference policy (Schulman, 2020, "Approximating KL divergence"; the one DeepSeekMath uses), and
an entropy bonus. Advantages come from `cohort.learning.advantages`.

Each head is `pi(a|x) = softmax(W . phi(x, a) / temperature)` over the options a decision offered
(`DecisionBatch.option_mask`), so log-probabilities and their gradients are exact and analytic.
Per decision d with advantage A and ratio `rho = exp(logpi_new(chosen) - old_log_prob)`:

    loss_d = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)     clipped surrogate
           + kl_beta * (exp(r) - r - 1),  r = logpi_ref(chosen) - logpi_new(chosen)   k3 KL
           - entropy_coefficient * H(pi)                                  entropy bonus

and the loss is the mean over every decision of every head. The gradient of each term with respect
to a decision's logits z is a few array operations (below); the chain rule through
`z_o = W[indices[o]] . values[o] / temperature` is one `np.bincount` scatter per head. The update is
full-batch: each of `inner_epochs` passes recomputes logpi_new, clips the global gradient norm and
takes one Adam step; `old_log_prob` stays fixed. Nothing here is random, so the same inputs give the
same result; callers run `grpo_update` in a thread because it is CPU work. An update whose numbers
leave float64's finite range (the loss, a gradient, the weights or the Adam moments) fails with
`NON_FINITE_UPDATE` naming the quantity, so no caller ever receives NaN or infinite weights.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import TypedDict

import numpy as np

from cohort.learning.arrays import BoolArray, FloatArray, IndexArray, Int64Array
from cohort.learning.decision_heads import DecisionBatch
from cohort.platform.errors import FailedPrecondition, InvalidArgument

MAX_INNER_EPOCHS = 100
MAX_LEARNING_RATE = 10.0
MAX_COEFFICIENT = 1e3
"""The largest `kl_beta` and `entropy_coefficient`."""
MAX_GRAD_NORM_LIMIT = 1e6
MAX_ADAM_EPSILON = 1.0
NON_FINITE_UPDATE = "NON_FINITE_UPDATE"
"""`ErrorInfo.reason` of an update whose arithmetic left float64's finite range."""
MAX_LOG_RATIO = 20.0
# Recorded log-probabilities may come from another implementation; allow its rounding above 0.
LOG_PROB_TOLERANCE = 1e-9


@dataclass(frozen=True)
class GrpoSettings:
    """GRPO hyper-parameters; construction validates them (errors name `config.<field>`)."""

    learning_rate: float = 0.1  # from the seed sweep in the README's "Default settings"
    clip_epsilon_low: float = 0.2
    clip_epsilon_high: float = 0.28
    kl_beta: float = 0.0
    entropy_coefficient: float = 0.0
    inner_epochs: int = 4
    max_grad_norm: float = 1.0
    positive_advantage_only: bool = False
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    seed: int = 0
    # Used by the trainer service to reject trajectories from old versions, not by the math here.
    max_policy_staleness: int = 1

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, requirement: str) -> None:
            if not ok:
                raise InvalidArgument(f"config.{name}", f"must be {requirement}, got {getattr(self, name)!r}")

        # `object`: these checks exist for values that do not match the annotations.
        def finite(value: object) -> bool:
            return isinstance(value, numbers.Real) and math.isfinite(value)

        def integral(value: object) -> bool:
            return isinstance(value, numbers.Integral)

        # Upper bounds keep one update's arithmetic far from float64 overflow: past them the Adam step
        # or the KL/entropy gradients can reach inf, and a version of NaN weights would follow.
        check(
            "learning_rate",
            finite(self.learning_rate) and 0 < self.learning_rate <= MAX_LEARNING_RATE,
            f"a finite number in (0, {MAX_LEARNING_RATE:g}]",
        )
        for name in ("clip_epsilon_low", "clip_epsilon_high"):
            value = getattr(self, name)
            check(name, finite(value) and 0 < value < 1, "strictly between 0 and 1")
        for name in ("kl_beta", "entropy_coefficient"):
            value = getattr(self, name)
            requirement = f"a finite number in [0, {MAX_COEFFICIENT:g}]"
            check(name, finite(value) and 0 <= value <= MAX_COEFFICIENT, requirement)
        check(
            "inner_epochs",
            integral(self.inner_epochs) and 1 <= self.inner_epochs <= MAX_INNER_EPOCHS,
            f"an integer from 1 to {MAX_INNER_EPOCHS}",
        )
        check(
            "max_grad_norm",
            finite(self.max_grad_norm) and 0 < self.max_grad_norm <= MAX_GRAD_NORM_LIMIT,
            f"a finite number in (0, {MAX_GRAD_NORM_LIMIT:g}]",
        )
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            check(name, finite(value) and 0 <= value < 1, "in [0, 1)")
        check(
            "adam_epsilon",
            finite(self.adam_epsilon) and 0 < self.adam_epsilon <= MAX_ADAM_EPSILON,
            f"a finite number in (0, {MAX_ADAM_EPSILON:g}]",
        )
        check("seed", integral(self.seed) and self.seed >= 0, "an integer >= 0")
        check(
            "max_policy_staleness",
            integral(self.max_policy_staleness) and self.max_policy_staleness >= 0,
            "an integer >= 0",
        )


@dataclass
class AdamState:
    """Adam moments per head (float64[B] each, like the head's weights) and the number of steps
    taken (bias correction uses `step`)."""

    step: int
    first_moments: dict[str, FloatArray]
    second_moments: dict[str, FloatArray]

    @classmethod
    def zeros(cls, weights: dict[str, FloatArray]) -> AdamState:
        return cls(
            step=0,
            first_moments={head: np.zeros_like(w, dtype=np.float64) for head, w in weights.items()},
            second_moments={head: np.zeros_like(w, dtype=np.float64) for head, w in weights.items()},
        )


@dataclass(frozen=True)
class HeadBatch:
    """One head's D decisions for an update: the encoded batch, the log-probability each chosen option
    had when it was sampled, its advantage, and the reference policy's weights for the KL term."""

    batch: DecisionBatch
    old_log_prob: FloatArray  # float64[D], <= 0
    advantage: FloatArray  # float64[D]
    reference_weights: FloatArray | None = None  # float64[B], the head's weights in the reference


@dataclass
class UpdateResult:
    """New weights and optimizer state, with the metrics of the last inner epoch."""

    weights: dict[str, FloatArray]
    optimizer: AdamState
    loss: float
    kl: float
    entropy: float
    clip_fraction: float
    grad_norm: float
    grad_norm_clipped: float
    decisions: int
    update_norm: float = 0.0
    """L2 norm of `weights` minus the input weights over every head: 0 when nothing moved."""


@dataclass
class LossTerms:
    """The pooled loss of one pass and its gradient per head (before norm clipping)."""

    loss: float
    gradients: dict[str, FloatArray]
    kl: float
    entropy: float
    clip_fraction: float
    decisions: int


@dataclass(frozen=True)
class _Prepared:
    """A head's arrays after the positive-advantage filter, flattened once for all epochs."""

    flat_indices: IndexArray  # intp[D*O*K]
    values: FloatArray  # float64[D, O, K]
    temperature: float
    option_mask: BoolArray  # bool[D, O]
    every_option_offered: bool  # no padding options: the masking steps can be skipped
    chosen: Int64Array  # int64[D]
    old_log_prob: FloatArray
    advantage: FloatArray
    reference_log_prob: FloatArray | None  # logpi_ref(chosen), fixed during the update
    buckets: int
    # One [D, O, K] work array reused by every pass (gathered weights, then gradient contributions):
    # a fresh array of that size per pass costs more in page faults than the arithmetic on it.
    scratch: FloatArray


def _log_softmax(logits: FloatArray, p: _Prepared) -> tuple[FloatArray, FloatArray]:
    """Row-wise (log pi, pi) over the offered options; log pi = -inf and pi = 0 elsewhere."""
    masked = logits if p.every_option_offered else np.where(p.option_mask, logits, -np.inf)
    # numpy's stubs type reductions with keepdims=True as Any: the annotations restore the arrays.
    top: FloatArray = masked.max(axis=1, keepdims=True)
    shifted = masked - top
    exponentials = np.exp(shifted)
    totals: FloatArray = exponentials.sum(axis=1, keepdims=True)
    return shifted - np.log(totals), exponentials / totals


def _logits(weights: FloatArray, p: _Prepared) -> FloatArray:
    # mode="clip" skips take's internal copy; the indices were checked to be in range.
    np.take(weights, p.flat_indices, out=p.scratch.reshape(-1), mode="clip")
    # numpy's stubs type einsum as Any.
    scores: FloatArray = np.einsum("dok,dok->do", p.scratch, p.values)
    return scores / p.temperature


def _scatter_gradient(logit_gradient: FloatArray, p: _Prepared) -> FloatArray:
    """Chain rule through the logits: sum of dL/dz_do * values_dok / temperature per bucket."""
    np.multiply(logit_gradient[:, :, None], p.values, out=p.scratch)
    return np.bincount(p.flat_indices, weights=p.scratch.reshape(-1), minlength=p.buckets) / p.temperature


def _prepare(head: str, weights: FloatArray, head_batch: HeadBatch, settings: GrpoSettings) -> _Prepared:
    batch = head_batch.batch
    where = f"batches[{head!r}]"
    indices = np.asarray(batch.indices)
    values = np.asarray(batch.values, dtype=np.float64)
    option_mask = np.asarray(batch.option_mask, dtype=bool)
    chosen = np.asarray(batch.chosen, dtype=np.int64)
    old_log_prob = np.asarray(head_batch.old_log_prob, dtype=np.float64)
    advantage = np.asarray(head_batch.advantage, dtype=np.float64)
    if indices.ndim != 3 or values.shape != indices.shape:
        raise InvalidArgument(f"{where}.batch", "indices and values must share a [D, O, K] shape")
    decisions, options, _ = indices.shape
    if option_mask.shape != (decisions, options) or chosen.shape != (decisions,):
        raise InvalidArgument(f"{where}.batch", "option_mask must be [D, O] and chosen [D]")
    if old_log_prob.shape != (decisions,) or advantage.shape != (decisions,):
        raise InvalidArgument(where, "old_log_prob and advantage must have one entry per decision")
    temperature = float(batch.temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise InvalidArgument(f"{where}.batch.temperature", f"must be > 0, got {temperature}")
    buckets = weights.shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= buckets):
        raise InvalidArgument(f"{where}.batch.indices", f"must lie in [0, {buckets})")
    # A sum is finite when every term is (the exact check runs only if it is not).
    values_finite = math.isfinite(values.sum()) or bool(np.all(np.isfinite(values)))
    if not (values_finite and np.all(np.isfinite(advantage))):
        raise InvalidArgument(where, "feature values and advantages must be finite")
    if np.any(old_log_prob > LOG_PROB_TOLERANCE) or not np.all(np.isfinite(old_log_prob)):
        raise InvalidArgument(f"{where}.old_log_prob", "must be finite log-probabilities (<= 0)")
    rows = np.arange(decisions)
    if np.any((chosen < 0) | (chosen >= options)) or not np.all(option_mask[rows, np.clip(chosen, 0, None)]):
        raise InvalidArgument(f"{where}.batch.chosen", "must index an option the decision offered")

    if settings.positive_advantage_only:
        keep = advantage > 0
        indices, values, option_mask = indices[keep], values[keep], option_mask[keep]
        chosen, old_log_prob, advantage = chosen[keep], old_log_prob[keep], advantage[keep]
    prepared = _Prepared(
        flat_indices=indices.reshape(-1).astype(np.intp, copy=False),
        values=values,
        temperature=temperature,
        option_mask=option_mask,
        every_option_offered=bool(option_mask.all()),
        chosen=chosen,
        old_log_prob=old_log_prob,
        advantage=advantage,
        reference_log_prob=None,
        buckets=buckets,
        scratch=np.empty(values.shape),
    )
    reference = head_batch.reference_weights
    if reference is not None and settings.kl_beta > 0 and chosen.size:
        reference = np.asarray(reference, dtype=np.float64)
        if reference.shape != weights.shape:
            raise InvalidArgument(f"{where}.reference_weights", f"must have {buckets} weights")
        log_probs, _ = _log_softmax(_logits(reference, prepared), prepared)
        reference_log_prob = log_probs[np.arange(chosen.size), chosen]
        prepared = replace(prepared, reference_log_prob=reference_log_prob)
    return prepared


class _HeadTerms(TypedDict):
    loss: float
    gradient: FloatArray
    kl: float
    kl_decisions: int
    entropy: float
    clipped: int


def _head_terms(weights: FloatArray, p: _Prepared, settings: GrpoSettings) -> _HeadTerms:
    """Summed (not yet averaged) loss terms of one head and the gradient of their sum w.r.t. W."""
    rows = np.arange(p.chosen.size)
    log_probs, probabilities = _log_softmax(_logits(weights, p), p)
    new_log_prob = log_probs[rows, p.chosen]
    # The log-ratio is capped (as verl does) so that a decision from a far-off policy cannot overflow
    # the ratio; beyond the cap the ratio is constant, so it carries no gradient there.
    log_ratio_new_old = new_log_prob - p.old_log_prob
    within_cap = np.abs(log_ratio_new_old) < MAX_LOG_RATIO
    ratio = np.exp(np.clip(log_ratio_new_old, -MAX_LOG_RATIO, MAX_LOG_RATIO))
    advantage = p.advantage
    clipped_ratio = np.clip(ratio, 1 - settings.clip_epsilon_low, 1 + settings.clip_epsilon_high)
    surrogate = -np.minimum(ratio * advantage, clipped_ratio * advantage)
    # The clipped branch is the minimum (and carries no gradient) only outside the trust region in
    # the direction the advantage pushes: above 1+eps_high for A > 0, below 1-eps_low for A < 0.
    clipped = ((advantage > 0) & (ratio > 1 + settings.clip_epsilon_high)) | (
        (advantage < 0) & (ratio < 1 - settings.clip_epsilon_low)
    )
    # d loss_d / d logpi_new(chosen) for the terms that depend only on the chosen option.
    chosen_weight = np.where(clipped | ~within_cap, 0.0, -ratio * advantage)

    loss = surrogate.sum()
    kl_sum = 0.0
    if p.reference_log_prob is not None:
        log_ratio = p.reference_log_prob - new_log_prob
        k3 = np.expm1(log_ratio) - log_ratio
        kl_sum = float(k3.sum())
        loss += settings.kl_beta * kl_sum
        chosen_weight = chosen_weight + settings.kl_beta * -np.expm1(log_ratio)

    # d logpi(chosen) / dz = onehot(chosen) - pi.
    logit_gradient = -chosen_weight[:, None] * probabilities
    logit_gradient[rows, p.chosen] += chosen_weight

    # Masked options have pi = 0 and log pi = -inf; their 0 * log 0 counts as 0.
    safe_log = log_probs if p.every_option_offered else np.where(p.option_mask, log_probs, 0.0)
    entropy: FloatArray = -np.einsum("do,do->d", probabilities, safe_log)
    if settings.entropy_coefficient > 0:
        loss -= settings.entropy_coefficient * entropy.sum()
        # dH/dz_j = -pi_j (log pi_j + H); the loss carries -c * H.
        logit_gradient += settings.entropy_coefficient * probabilities * (safe_log + entropy[:, None])

    gradient = _scatter_gradient(logit_gradient, p)
    return {
        "loss": float(loss),
        "gradient": gradient,
        "kl": kl_sum,
        "kl_decisions": p.chosen.size if p.reference_log_prob is not None else 0,
        "entropy": float(entropy.sum()),
        "clipped": int(clipped.sum()),
    }


def _pooled_terms(
    weights: dict[str, FloatArray], prepared: dict[str, _Prepared], settings: GrpoSettings
) -> LossTerms:
    decisions = sum(p.chosen.size for p in prepared.values())
    gradients: dict[str, FloatArray] = {}
    loss = kl = entropy = 0.0
    kl_decisions = clipped = 0
    for head, p in prepared.items():
        if p.chosen.size == 0:
            continue
        terms = _head_terms(weights[head], p, settings)
        gradients[head] = terms["gradient"] / decisions
        loss += terms["loss"]
        kl += terms["kl"]
        kl_decisions += terms["kl_decisions"]
        entropy += terms["entropy"]
        clipped += terms["clipped"]
    scale = 1.0 / decisions if decisions else 0.0
    return LossTerms(
        loss=loss * scale,
        gradients=gradients,
        kl=kl / kl_decisions if kl_decisions else 0.0,
        entropy=entropy * scale,
        clip_fraction=clipped * scale,
        decisions=decisions,
    )


def _prepare_all(
    weights: dict[str, FloatArray], batches: dict[str, HeadBatch], settings: GrpoSettings
) -> dict[str, _Prepared]:
    prepared: dict[str, _Prepared] = {}
    for head, head_batch in batches.items():
        if head not in weights:
            raise InvalidArgument(f"batches[{head!r}]", f"the policy has no head {head!r}")
        prepared[head] = _prepare(head, np.asarray(weights[head], dtype=np.float64), head_batch, settings)
    return prepared


def grpo_loss(
    weights: dict[str, FloatArray], batches: dict[str, HeadBatch], settings: GrpoSettings
) -> LossTerms:
    """The pooled GRPO loss at `weights` and its exact gradient per head (no update is made)."""
    return _pooled_terms(weights, _prepare_all(weights, batches, settings), settings)


def grpo_update(
    weights: dict[str, FloatArray],
    batches: dict[str, HeadBatch],
    optimizer: AdamState,
    settings: GrpoSettings,
) -> UpdateResult:
    """`settings.inner_epochs` full-batch Adam steps on the GRPO loss; inputs are not modified.

    Heads with no decisions in `batches` (after the positive-advantage filter) keep their weights
    and moments: like a framework parameter with no gradient, they take no step.
    """
    for head in weights:
        for moments in (optimizer.first_moments, optimizer.second_moments):
            if head in moments and moments[head].shape != np.shape(weights[head]):
                raise InvalidArgument("optimizer_state", f"moments of head {head!r} do not match its weights")
    new_weights = {head: np.array(w, dtype=np.float64) for head, w in weights.items()}
    first = {head: np.array(m, dtype=np.float64) for head, m in optimizer.first_moments.items()}
    second = {head: np.array(v, dtype=np.float64) for head, v in optimizer.second_moments.items()}
    step = optimizer.step
    prepared = _prepare_all(new_weights, batches, settings)

    terms = LossTerms(0.0, {}, 0.0, 0.0, 0.0, 0)
    grad_norm = clipped_norm = 0.0
    beta1, beta2 = settings.adam_beta1, settings.adam_beta2
    # Only heads that took a step can have moved: the norm skips a subtraction over the others (in
    # sorted order: a set's order changes between processes, and so would the float sum).
    stepped: set[str] = set()
    for epoch in range(1, settings.inner_epochs + 1):
        terms = _pooled_terms(new_weights, prepared, settings)
        if terms.decisions == 0:
            break
        stepped.update(terms.gradients)
        grad_norm = _global_norm(terms.gradients)
        if not all(map(math.isfinite, (terms.loss, terms.kl, terms.entropy, grad_norm))):
            # Scalars only on the way: the arrays are searched once something is wrong.
            _raise_non_finite(epoch, new_weights, first, second, terms)
        scale = settings.max_grad_norm / grad_norm if grad_norm > settings.max_grad_norm else 1.0
        clipped_norm = grad_norm * scale
        step += 1
        first_correction = 1 - beta1**step
        second_correction = 1 - beta2**step
        for head, gradient in terms.gradients.items():
            gradient = gradient * scale
            m = first.setdefault(head, np.zeros_like(gradient))
            v = second.setdefault(head, np.zeros_like(gradient))
            m *= beta1
            m += (1 - beta1) * gradient
            v *= beta2
            v += (1 - beta2) * gradient * gradient
            new_weights[head] -= (
                settings.learning_rate
                * (m / first_correction)
                / (np.sqrt(v / second_correction) + settings.adam_epsilon)
            )
    for head, w in new_weights.items():  # heads the state did not cover yet
        first.setdefault(head, np.zeros_like(w))
        second.setdefault(head, np.zeros_like(w))
    if any(not _all_finite(a) for arrays in (new_weights, first, second) for a in arrays.values()):
        _raise_non_finite(settings.inner_epochs, new_weights, first, second, None)
    update_norm = _global_norm(
        {
            head: (new_weights[head] - np.asarray(weights[head], dtype=np.float64)).ravel()
            for head in sorted(stepped)
        }
    )
    return UpdateResult(
        weights=new_weights,
        optimizer=AdamState(step=step, first_moments=first, second_moments=second),
        loss=terms.loss,
        kl=terms.kl,
        entropy=terms.entropy,
        clip_fraction=terms.clip_fraction,
        grad_norm=grad_norm,
        grad_norm_clipped=clipped_norm,
        decisions=terms.decisions,
        update_norm=update_norm,
    )


def _all_finite(array: FloatArray) -> bool:
    # A sum is finite only when every term is; the exact test runs only when the sum overflowed.
    return math.isfinite(float(np.sum(array))) or bool(np.all(np.isfinite(array)))


def _global_norm(gradients: dict[str, FloatArray]) -> float:
    """The L2 norm over every head's array (a gradient, a weight change); finite arrays whose squares
    overflow are rescaled by their largest magnitude instead of reporting an infinite norm."""
    norm = math.sqrt(sum(float(g @ g) for g in gradients.values()))
    if math.isinf(norm) and all(_all_finite(g) for g in gradients.values()):
        largest = max(float(np.max(np.abs(g))) for g in gradients.values() if g.size)
        norm = largest * math.sqrt(sum(float((g / largest) @ (g / largest)) for g in gradients.values()))
    return norm


def _raise_non_finite(
    epoch: int,
    weights: dict[str, FloatArray],
    first: dict[str, FloatArray],
    second: dict[str, FloatArray],
    terms: LossTerms | None,
) -> None:
    """Fails the update naming the first quantity that left the finite range: a version of NaN or
    infinite weights would serve NaN probabilities, and Adam state like that poisons later updates."""
    for quantity, arrays in (
        ("weights", weights),
        ("Adam first moments", first),
        ("Adam second moments", second),
    ):
        for head, array in sorted(arrays.items()):
            if not _all_finite(array):
                _fail(quantity, epoch, head)
    # A non-finite loss, KL or entropy means the logits overflowed: huge features times large weights.
    for quantity, value in (
        () if terms is None else (("loss", terms.loss), ("KL", terms.kl), ("entropy", terms.entropy))
    ):
        if not math.isfinite(value):
            _fail(quantity, epoch, None)
    for head, array in sorted((terms.gradients if terms is not None else {}).items()):
        if not _all_finite(array):
            _fail("gradient", epoch, head)
    _fail("gradient norm", epoch, None)


def _fail(quantity: str, epoch: int, head: str | None) -> None:
    where = f" of head {head!r}" if head is not None else ""
    raise FailedPrecondition(
        f"non-finite update: the {quantity}{where} became NaN or infinite in inner epoch {epoch}; "
        "no version was made (lower learning_rate, kl_beta or entropy_coefficient, or check the "
        "trajectories' features)",
        reason=NON_FINITE_UPDATE,
        metadata={"quantity": quantity, "head": head or "", "epoch": str(epoch)},
    )
