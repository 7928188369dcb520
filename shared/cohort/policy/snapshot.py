"""Decision heads and immutable policy snapshots: validation, proto conversion and `decide`.

The math of a head (features, batches, log-probabilities) is `cohort.learning.decision_heads`; this
module reads protobuf messages into it and serves single decisions with the same formula.
"""

from __future__ import annotations

import hashlib
import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import accumulate

import numpy as np

from cohort.api.trainer.v1 import trainer_pb2
from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.learning.decision_heads import (
    OPTION_SEPARATOR,
    SHARED_PREFIX,
    CheckedDecision,
    DecisionBatch,
    bucket,
    encode_checked,
)
from cohort.learning.exploration import check_exploration_rate, mixture_log_probabilities
from cohort.platform.errors import FailedPrecondition, InvalidArgument, NotFound
from cohort.sdk.runtime import DecisionRequest

DEFAULT_FEATURE_BUCKETS = 4096
MIN_FEATURE_BUCKETS = 16
MAX_FEATURE_BUCKETS = 1 << 22
DEFAULT_TEMPERATURE = 1.0
MAX_HEADS = 64
MAX_OPTIONS = 4096
MAX_NAME_LENGTH = 200

_SEED_MODULUS = 1 << 64
CONTEXT_ROWS_CACHED = 64
"""Context-row layouts (head, options, feature names) a snapshot keeps; then it starts over."""
CONTEXT_ROWS_MAX_WEIGHTS = 1024
"""Only layouts of at most this many weights (8 KiB) are kept: at most 512 KiB per snapshot."""

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_PCG64_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645


def _hash_constants(constant: int, multiplier: int, count: int) -> list[int]:
    constants = [constant]
    for _ in range(count):
        constants.append(constants[-1] * multiplier & _M32)
    return constants


# numpy's SeedSequence (pool of 4 words): the hash constants do not depend on the entropy.
_MIX_HASH = _hash_constants(0x43B0D7E5, 0x931E8875, 16)
_STATE_HASH = _hash_constants(0x8B51F9DD, 0x58F38DED, 8)
_POOL_OF_ZERO = [(v ^ v >> 16) for v in ((_MIX_HASH[i] * _MIX_HASH[i + 1]) & _M32 for i in (2, 3))]
_MIX_STEPS = [
    (source, target, _MIX_HASH[k], _MIX_HASH[k + 1])
    for k, (source, target) in enumerate(
        ((source, target) for source in range(4) for target in range(4) if source != target), start=4
    )
]


def _seeded_uniform(seed: int) -> float:
    """`numpy.random.default_rng(seed).random()` for `0 <= seed < 2**64`, without building a
    SeedSequence, a PCG64 and a Generator: the same hash of the seed into the PCG64 state and
    increment, one step, the XSL-RR output, `(x >> 11) * 2**-53`. Several microseconds cheaper per
    decision; `tests/unit/test_decide_reference.py` checks it against numpy."""
    pool = [seed & _M32, seed >> 32]
    for i in (0, 1):
        value = (pool[i] ^ _MIX_HASH[i]) * _MIX_HASH[i + 1] & _M32
        pool[i] = value ^ value >> 16
    pool += _POOL_OF_ZERO
    for source, target, xor, multiplier in _MIX_STEPS:
        value = (pool[source] ^ xor) * multiplier & _M32
        mixed = (0xCA01F9DD * pool[target] - 0x4973F715 * (value ^ value >> 16)) & _M32
        pool[target] = mixed ^ mixed >> 16
    words = []
    for i in range(8):
        value = (pool[i & 3] ^ _STATE_HASH[i]) * _STATE_HASH[i + 1] & _M32
        words.append(value ^ value >> 16)
    initial = words[1] << 96 | words[0] << 64 | words[3] << 32 | words[2]
    increment = (words[5] << 96 | words[4] << 64 | words[7] << 32 | words[6]) << 1 & _M128 | 1
    state = ((increment + initial) * _PCG64_MULTIPLIER + increment) * _PCG64_MULTIPLIER + increment & _M128
    folded = (state >> 64 ^ state) & _M64
    rotation = state >> 122
    return (((folded >> rotation | folded << (-rotation & 63)) & _M64) >> 11) * (1.0 / 9007199254740992.0)


# Unseeded decisions share one generator: decisions run on one event loop thread (or one worker).
_UNSEEDED = np.random.default_rng()


@dataclass(frozen=True)
class HeadSpec:
    """A decision head: a softmax over `options` (or per-call candidates when empty)."""

    name: str
    options: tuple[str, ...] = ()
    feature_buckets: int = DEFAULT_FEATURE_BUCKETS
    temperature: float = DEFAULT_TEMPERATURE
    description: str = ""

    @classmethod
    def from_proto(cls, message: trainer_pb2.DecisionHead, field_name: str = "head") -> HeadSpec:
        """A validated head; zero `feature_buckets`/`temperature` take the defaults.

        Raises `InvalidArgument` naming `<field_name>.<field>`.
        """
        if not message.name:
            raise InvalidArgument(f"{field_name}.name", "must not be empty")
        if len(message.name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"{field_name}.name", f"must be at most {MAX_NAME_LENGTH} characters")
        buckets = message.feature_buckets or DEFAULT_FEATURE_BUCKETS
        if not (MIN_FEATURE_BUCKETS <= buckets <= MAX_FEATURE_BUCKETS and buckets & (buckets - 1) == 0):
            raise InvalidArgument(
                f"{field_name}.feature_buckets",
                f"must be a power of two from {MIN_FEATURE_BUCKETS} to 2^22 "
                f"(or 0 for {DEFAULT_FEATURE_BUCKETS}), not {message.feature_buckets}",
            )
        temperature = message.temperature or DEFAULT_TEMPERATURE
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidArgument(
                f"{field_name}.temperature", f"must be a finite number > 0 (or 0 for 1.0), not {temperature}"
            )
        options = tuple(message.options)
        check_options(options, f"{field_name}.options")
        return cls(
            name=message.name,
            options=options,
            feature_buckets=int(buckets),
            temperature=float(temperature),
            description=message.description,
        )

    def to_proto(self) -> trainer_pb2.DecisionHead:
        return trainer_pb2.DecisionHead(
            name=self.name,
            options=self.options,
            feature_buckets=self.feature_buckets,
            temperature=self.temperature,
            description=self.description,
        )


def heads_from_proto(
    messages: Sequence[trainer_pb2.DecisionHead], field_name: str = "heads"
) -> dict[str, HeadSpec]:
    """Validated heads by name, in the given order: at least one, names unique."""
    if not messages:
        raise InvalidArgument(field_name, "at least one decision head is required")
    if len(messages) > MAX_HEADS:
        raise InvalidArgument(field_name, f"at most {MAX_HEADS} heads")
    heads: dict[str, HeadSpec] = {}
    for i, message in enumerate(messages):
        head = HeadSpec.from_proto(message, f"{field_name}[{i}]")
        if head.name in heads:
            raise InvalidArgument(f"{field_name}[{i}].name", f"duplicate head name {head.name!r}")
        heads[head.name] = head
    return heads


def check_options(options: Sequence[str], field_name: str) -> None:
    """Options are non-empty strings, unique, at most MAX_OPTIONS."""
    key = tuple(options)
    try:
        problem = _options_problem(key)
    except TypeError:  # an unhashable option: the uncached check names it
        problem = _options_problem.__wrapped__(key)
    if problem is not None:
        where, message = problem
        raise InvalidArgument(field_name if where is None else f"{field_name}[{where}]", message)


@lru_cache(maxsize=4096)
def _options_problem(options: tuple[str, ...]) -> tuple[int | None, str] | None:
    """What is wrong with an options list (the index, or None for the list), else None. Cached: a
    batch of recorded decisions repeats the same few options lists thousands of times."""
    if len(options) > MAX_OPTIONS:
        return None, f"at most {MAX_OPTIONS} options"
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not isinstance(option, str):
            return i, f"must be a string, not {type(option).__name__}"
        if not option:
            return i, "must not be empty"
        if option in seen:
            return i, f"duplicate option {option!r}"
        seen.add(option)
    return None


def _checked_features(features: Mapping[str, float], field_name: str) -> dict[str, float]:
    """What `_check_features` returns, read the cheap way: keys, then a lookup each (several times
    cheaper than `items()` on a protobuf map), in the same order. Anything unusual (an error, a name
    that is not a plain string, a value that is not finite) goes through `_check_features`, for its
    exact answer or error."""
    try:
        names = list(features)
        checked = dict(zip(names, map(float, map(features.__getitem__, names)), strict=True))
    except Exception:
        return _check_features(features, field_name)
    if (
        len(checked) != len(names)
        or not all(map(math.isfinite, checked.values()))
        or not all(type(name) is str for name in names)
    ):
        return _check_features(features, field_name)
    return checked


def _check_features(features: Mapping[str, float], field_name: str) -> dict[str, float]:
    """The features as a name -> float dict; `InvalidArgument` for a non-string name or a bad value."""
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


def check_weights(head: HeadSpec, weights: Iterable[float], field_name: str) -> np.ndarray:
    """A head's weights as a float64[B] array: exactly `feature_buckets` finite numbers."""
    array = np.array(weights, dtype=np.float64)
    if array.shape != (head.feature_buckets,):
        raise InvalidArgument(
            field_name, f"head {head.name!r} needs {head.feature_buckets} weights, got {array.size}"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidArgument(field_name, f"weights of head {head.name!r} must be finite numbers")
    return array


def parameters_sha256(weights: Mapping[str, np.ndarray]) -> str:
    """sha256 over the heads' weights as float64 little-endian bytes, heads in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(np.ascontiguousarray(weights[name], dtype="<f8").tobytes())
    return digest.hexdigest()


def check_recorded_decision(
    head: HeadSpec, decision: trajectory_pb2.Decision, field_name: str | Callable[[], str]
) -> CheckedDecision:
    """A recorded decision of `head` that can be trained on, read once; else `InvalidArgument`.

    `field_name` may be a function that makes it: a batch of thousands of decisions formats a name
    only for the one that is wrong.
    """
    options = tuple(decision.options[:]) or head.options
    problem = _options_problem(options) if options else (None, "a recorded decision needs its options")
    if problem is not None:
        where, message = problem
        suffix = ".options" if where is None else f".options[{where}]"
        raise InvalidArgument(_name(field_name) + suffix, message)
    chosen_index = decision.chosen_index
    if not 0 <= chosen_index < len(options):
        raise InvalidArgument(
            f"{_name(field_name)}.chosen_index",
            f"{chosen_index} is not an index of the {len(options)} options",
        )
    chosen = decision.chosen
    if chosen and chosen != options[chosen_index]:
        raise InvalidArgument(f"{_name(field_name)}.chosen", f"{chosen!r} is not options[{chosen_index}]")
    log_prob = decision.log_prob
    if not math.isfinite(log_prob):
        raise InvalidArgument(f"{_name(field_name)}.log_prob", "must be a finite number")
    # Keys, then a lookup each: several times cheaper than items() on a protobuf map.
    features = decision.features
    names = tuple(sorted(features))
    values = list(map(features.__getitem__, names))
    if not all(map(math.isfinite, values)):
        _check_finite(names, values, f"{_name(field_name)}.features")
    option_features = decision.option_features
    if not option_features:
        # A plain tuple: building a NamedTuple costs as much as reading a feature map.
        return (options, names, values, chosen_index, log_prob, ())
    if len(option_features) != len(options):
        raise InvalidArgument(
            f"{_name(field_name)}.option_features",
            f"has {len(option_features)} entries for {len(options)} options",
        )
    per_option = []
    for i, entry in enumerate(option_features):
        entry_values = entry.values
        option_names = tuple(entry_values)
        option_values = list(map(entry_values.__getitem__, option_names))
        _check_finite(option_names, option_values, f"{_name(field_name)}.option_features[{i}]")
        per_option.append(dict(zip(option_names, option_values, strict=True)))
    return (options, names, values, chosen_index, log_prob, tuple(per_option))


def encode_batch(head: HeadSpec, decisions: Sequence[trajectory_pb2.Decision]) -> DecisionBatch:
    """The `DecisionBatch` of recorded decisions of `head`.

    Each decision's own `options` are used (the head's fixed options when a recording left them
    out); `check_recorded_decision` says whether a decision is usable, and a bad one here is an
    `InvalidArgument` naming `decisions[i]`.
    """
    return encode_checked(
        head,
        [check_recorded_decision(head, decision, f"decisions[{i}]") for i, decision in enumerate(decisions)],
    )


def _name(field_name: str | Callable[[], str]) -> str:
    return field_name if isinstance(field_name, str) else field_name()


def _check_finite(names: Sequence[str], values: Sequence[float], field_name: str) -> None:
    if not all(map(math.isfinite, values)):
        bad = next(i for i, value in enumerate(values) if not math.isfinite(value))
        raise InvalidArgument(f"{field_name}[{names[bad]}]", f"must be a finite number, not {values[bad]}")


def _readonly(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float64 and not array.flags.writeable:
        return array
    copy = np.array(array, dtype=np.float64)
    copy.setflags(write=False)
    return copy


@dataclass(frozen=True)
class PolicySnapshot:
    """One immutable policy version: heads and their weights (read-only float64[B] arrays)."""

    policy_id: str
    version: int
    heads: dict[str, HeadSpec]
    weights: dict[str, np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        if set(self.heads) != set(self.weights):
            raise InvalidArgument("weights", "every head needs weights, and only heads have weights")
        weights = {}
        for name, head in self.heads.items():
            array = np.asarray(self.weights[name])
            if array.shape != (head.feature_buckets,):
                raise InvalidArgument(f"weights[{name}]", f"must have shape ({head.feature_buckets},)")
            weights[name] = _readonly(array)
        # The snapshot's own dict of read-only arrays: the caller's dict and arrays stay as they were.
        object.__setattr__(self, "heads", dict(self.heads))
        object.__setattr__(self, "weights", weights)
        # (head, options, feature names) -> float64[O, 1 + F]: the weights of each option's context row,
        # gathered once; decisions repeat a few such layouts. Not a field: no part of eq or repr.
        object.__setattr__(self, "_context_rows", {})

    @cached_property
    def _policy_ref(self) -> trajectory_pb2.PolicyRef:
        """This version's `PolicyRef`, made once (a decision gets a copy)."""
        return trajectory_pb2.PolicyRef(policy_id=self.policy_id, version=self.version)

    @cached_property
    def parameters_sha256(self) -> str:
        return parameters_sha256(self.weights)

    @classmethod
    def from_proto(cls, policy: trainer_pb2.Policy) -> PolicySnapshot:
        """The snapshot of a `Policy` message fetched with its parameters (`include_parameters`)."""
        heads = heads_from_proto(policy.heads, "policy.heads")
        given: dict[str, np.ndarray] = {}
        for i, parameters in enumerate(policy.parameters):
            head = heads.get(parameters.head)
            if head is None:
                raise InvalidArgument(f"policy.parameters[{i}].head", f"unknown head {parameters.head!r}")
            given[head.name] = check_weights(head, parameters.weights, f"policy.parameters[{i}].weights")
        missing = [name for name in heads if name not in given]
        if missing:
            raise InvalidArgument(
                "policy.parameters",
                f"no weights for head {missing[0]!r}; fetch the policy with include_parameters",
            )
        snapshot = cls(policy_id=policy.policy_id, version=policy.version, heads=heads, weights=given)
        if policy.parameters_sha256 and policy.parameters_sha256 != snapshot.parameters_sha256:
            raise InvalidArgument("policy.parameters_sha256", "does not match the parameters")
        return snapshot

    def to_proto(self, include_parameters: bool = False) -> trainer_pb2.Policy:
        """The `Policy` message of this version (identity, heads, checksum; weights when asked)."""
        policy = trainer_pb2.Policy(
            policy_id=self.policy_id,
            version=self.version,
            heads=[head.to_proto() for head in self.heads.values()],
            parameters_sha256=self.parameters_sha256,
        )
        if include_parameters:
            policy.parameters.extend(
                trainer_pb2.HeadParameters(head=name, weights=self.weights[name].tolist())
                for name in self.heads
            )
        return policy

    def head(self, name: str) -> HeadSpec:
        head = self.heads.get(name)
        if head is None:
            raise NotFound(f"head {name!r} not found in policy {self.policy_id!r} version {self.version}")
        return head

    def decide(self, request: DecisionRequest) -> trajectory_pb2.Decision:
        """Chooses an option: sampled (reproducibly when `request.seed` is set) or greedy (ties to the
        first); the returned decision carries the exact log-probability and the full distribution of
        what it was drawn from: the policy, or with `request.exploration` ε > 0 (sampled decisions
        only) the mixture `(1 - ε) * pi + ε * uniform(options)`, recorded with its ε.

        A head with fixed options takes none (all of them) or some of them, in the head's order."""
        head = self.heads.get(request.head) or self.head(request.head)
        exploration = request.exploration
        if exploration:
            exploration = _checked_exploration(exploration, request.greedy)
        options = request.options
        if type(options) is not tuple:
            options = tuple(options)
        if head.options:
            if not options:
                options = head.options
            elif options != head.options:
                try:
                    problem = _offered_subset_problem(head.options, options)
                except TypeError:  # an unhashable option: the uncached check names it
                    problem = _offered_subset_problem.__wrapped__(head.options, options)
                if problem is not None:
                    raise InvalidArgument(
                        "options",
                        f"head {head.name!r} has fixed options: send none, or some of "
                        f"{list(head.options)} in that order; {problem}",
                    )
        else:
            if not options:
                raise InvalidArgument(
                    "options", f"head {head.name!r} has no fixed options: send the candidates"
                )
            check_options(options, "options")
        option_features = request.option_features
        if option_features and len(option_features) != len(options):
            raise InvalidArgument(
                "option_features", f"has {len(option_features)} entries for {len(options)} options"
            )
        features = _checked_features(request.features, "features")
        checked_option_features = [
            _checked_features(values, f"option_features[{i}]") for i, values in enumerate(option_features)
        ]

        log_probs = self._log_probabilities(head, options, features, checked_option_features)
        if exploration:
            log_probs = mixture_log_probabilities(log_probs, exploration)
        probabilities = list(map(math.exp, log_probs))
        if request.greedy:
            chosen = max(range(len(options)), key=log_probs.__getitem__)  # ties go to the first
        else:
            seed = request.seed
            draw = _UNSEEDED.random() if seed is None else _seeded_uniform(seed % _SEED_MODULUS)
            cumulative = list(accumulate(probabilities))
            chosen = min(bisect_right(cumulative, draw * cumulative[-1]), len(options) - 1)

        decision = trajectory_pb2.Decision(
            head=head.name,
            options=options,
            chosen_index=chosen,
            chosen=options[chosen],
            log_prob=log_probs[chosen],
            probabilities=probabilities,
            features=features,
            option_features=[trajectory_pb2.FeatureMap(values=values) for values in checked_option_features],
            policy=self._policy_ref,
            greedy=request.greedy,
        )
        if exploration:
            decision.exploration = exploration
        # Set in place: cheaper than building a Timestamp for the constructor to copy.
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        timestamp = decision.timestamp
        timestamp.seconds = seconds
        timestamp.nanos = nanos
        return decision

    def _log_probabilities(
        self,
        head: HeadSpec,
        options: tuple[str, ...],
        features: dict[str, float],
        option_features: list[dict[str, float]],
    ) -> list[float]:
        """Exact log-softmax of one decision's logits (the formula of `cohort.learning.decision_heads`).

        The context part of every option's row has the same values `[1, x_1, ..., x_F]` (features in
        name order), so it is one matrix-vector product with the rows' weights, gathered once per
        layout (`_rows`); only per-option features need a loop.
        """
        weights = self.weights[head.name]
        names = tuple(sorted(features))
        rows = self._context_rows.get((head.name, options, names))
        if rows is None:
            rows = self._rows(head, options, names)
        logits = (rows @ np.array([1.0, *map(features.__getitem__, names)], dtype=np.float64)).tolist()
        if option_features:
            buckets = head.feature_buckets
            for i, values in enumerate(option_features):
                if values:
                    logits[i] += float(
                        sum(
                            weights[bucket(SHARED_PREFIX + name, buckets)] * values[name]
                            for name in sorted(values)
                        )
                    )
        if not all(map(math.isfinite, logits)):
            self._refuse_non_finite(head)
        temperature = head.temperature
        top = max(logits)
        shifted = [(logit - top) / temperature for logit in logits]
        log_total = math.log(math.fsum(map(math.exp, shifted)))
        return [value - log_total for value in shifted]

    def _refuse_non_finite(self, head: HeadSpec) -> None:
        """A NaN or infinite logit makes NaN (or meaningless) probabilities: never served."""
        weights = self.weights[head.name]
        if not np.all(np.isfinite(weights)):
            raise FailedPrecondition(
                f"policy {self.policy_id!r} version {self.version} has non-finite weights in head "
                f"{head.name!r}; it cannot serve decisions (use another version)",
                reason="NON_FINITE_POLICY",
                metadata={"policy_id": self.policy_id, "version": str(self.version), "head": head.name},
            )
        raise InvalidArgument(
            "features",
            f"the logits of head {head.name!r} overflow: feature values this large times the "
            "policy's weights leave the finite range; scale the features down",
        )

    def _rows(self, head: HeadSpec, options: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
        """float64[O, 1 + F]: each option's bias weight, then its weight for each context feature."""
        rows = self.weights[head.name][_context_indices(options, names, head.feature_buckets)]
        if rows.size <= CONTEXT_ROWS_MAX_WEIGHTS:
            rows.setflags(write=False)
            cache = self._context_rows
            if len(cache) >= CONTEXT_ROWS_CACHED:
                cache.clear()
            cache[(head.name, options, names)] = rows
        return rows


def _checked_exploration(exploration: float, greedy: bool) -> float:
    """The ε a decision explores with: the request's, or 0 for a greedy decision (which takes the
    policy's argmax); `InvalidArgument` naming `exploration` unless it is a number in [0, 1)."""
    try:
        value = float(exploration)
    except (TypeError, ValueError):
        raise InvalidArgument("exploration", f"must be a number in [0, 1), not {exploration!r}") from None
    check_exploration_rate(value, "exploration")
    return 0.0 if greedy else value


@lru_cache(maxsize=1024)
def _offered_subset_problem(head_options: tuple[str, ...], offered: tuple[str, ...]) -> str | None:
    """Why `offered` is not a non-empty subset of `head_options` in their order, else None. Cached:
    an agent offers the same few subsets over and over."""
    position = {option: i for i, option in enumerate(head_options)}
    previous = -1
    for i, option in enumerate(offered):
        index = position.get(option) if isinstance(option, str) else None
        if index is None:
            return f"options[{i}] {option!r} is not one of them"
        if index <= previous:
            return f"options[{i}] {option!r} is out of order or repeated"
        previous = index
    return None


@lru_cache(maxsize=4096)
def _context_indices(options: tuple[str, ...], names: tuple[str, ...], buckets: int) -> np.ndarray:
    """int64[O, 1 + F]: per option, the buckets of its bias and of its cross with each feature name."""
    matrix = np.empty((len(options), len(names) + 1), dtype=np.int64)
    for i, option in enumerate(options):
        prefix = option + OPTION_SEPARATOR
        matrix[i, 0] = bucket(prefix, buckets)
        matrix[i, 1:] = [bucket(prefix + name, buckets) for name in names]
    matrix.setflags(write=False)
    return matrix
