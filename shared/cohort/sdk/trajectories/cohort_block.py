"""The `"cohort"` block of a recorded Trae file: Cohort's additions, both ways.

A file written by `cohort.sdk.TrajectoryRecorder` is a Trae trajectory document with one extra
top-level key, `"cohort"`, holding the Cohort-only fields of `cohort.api.trajectory.v1.Trajectory`
in proto JSON form with proto field names: `trajectory_id`, `agent`, `labels`, `job_id`,
`group_id`, `iteration`, `query_id`, `policy`, `decisions`, `termination_reason`,
`termination_detail`, `outcome`, `total_usage`, `cost_micro_usd`. `cohort_section` writes it
(every key, `null` for an unset `outcome` or `total_usage`, map keys sorted) and `apply_cohort`
reads it back into the message, so `apply_cohort(t, cohort_section(t))` leaves `t` unchanged. The
Trae converter (`cohort.sdk.trajectories.trae`) reads and writes the block with these two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from cohort.api.trajectory.v1 import trajectory_pb2
from cohort.platform.errors import InvalidArgument

COHORT_KEY = "cohort"
"""The top-level key of a recorded Trae file that holds Cohort's additions."""

TERMINATION_NAMES = {
    value.name.removeprefix("TERMINATION_REASON_").lower(): value.number
    for value in trajectory_pb2.TerminationReason.DESCRIPTOR.values
}
OUTCOME_NAMES = {
    value.name.removeprefix("OUTCOME_KIND_").lower(): value.number
    for value in trajectory_pb2.OutcomeKind.DESCRIPTOR.values
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_STRING_FIELDS = ("trajectory_id", "job_id", "group_id", "query_id", "termination_detail")
_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "reasoning_tokens",
)


def termination_name(reason: str | int) -> str:
    """`"timeout"`, `"TIMEOUT"`, `"TERMINATION_REASON_TIMEOUT"` or `3` -> `"TERMINATION_REASON_TIMEOUT"`."""
    return _enum_name(reason, TERMINATION_NAMES, trajectory_pb2.TerminationReason, "TERMINATION_REASON_")


def outcome_name(kind: str | int) -> str:
    """`"success"`, `"SUCCESS"`, `"OUTCOME_KIND_SUCCESS"` or `1` -> `"OUTCOME_KIND_SUCCESS"`."""
    return _enum_name(kind, OUTCOME_NAMES, trajectory_pb2.OutcomeKind, "OUTCOME_KIND_")


def _enum_name(value: str | int, names: Mapping[str, int], enum: EnumTypeWrapper, prefix: str) -> str:
    if isinstance(value, bool):
        raise InvalidArgument("reason", f"not an enum value: {value!r}")
    if isinstance(value, int):
        try:
            return enum.Name(value)
        except ValueError:
            raise InvalidArgument("reason", f"unknown value {value}") from None
    key = str(value).strip().lower().removeprefix(prefix.lower())
    if key not in names or names[key] == 0:
        allowed = ", ".join(k for k, v in names.items() if v)
        raise InvalidArgument("reason", f"unknown value {value!r}; expected one of {allowed}")
    return prefix + key.upper()


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 text as an aware datetime (naive = UTC); None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Reading


def apply_cohort(t: trajectory_pb2.Trajectory, cohort: Mapping[str, Any], path: str = COHORT_KEY) -> None:
    """Sets a message's Cohort fields from a `cohort` block (keys absent or null are left alone).

    Raises `InvalidArgument` naming the offending key (`cohort.decisions[2]`, ...).
    """
    for key, read in _READERS:
        value = cohort.get(key)
        if value is None:
            continue
        field = f"{path}.{key}"
        try:
            read(t, value, field)
        except InvalidArgument as exc:
            # The enum helpers name their own argument ("reason"); the block's key is what helps.
            name = exc.field if exc.field.startswith(field) else field
            raise InvalidArgument(name, exc.description) from exc
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise InvalidArgument(field, f"malformed value: {exc}") from exc


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(field, "must be a JSON object")
    return value


def _read_agent(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    agent = _object(value, field)
    t.agent.name = str(agent.get("name") or "")
    t.agent.version = str(agent.get("version") or "")


def _read_policy(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    _set_policy(t.policy, _object(value, field))


def _read_labels(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    labels = _object(value, field)
    t.labels.clear()
    t.labels.update({str(k): str(v) for k, v in labels.items()})


def _read_termination(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    # protoc's .pyi types an enum field as the enum's class; `Value` returns the int the field holds.
    reason = trajectory_pb2.TerminationReason.Value(termination_name(value))
    t.termination_reason = cast(trajectory_pb2.TerminationReason, reason)


def _read_outcome(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    o = _object(value, field)
    t.outcome.Clear()
    kind = trajectory_pb2.OutcomeKind.Value(outcome_name(o.get("kind") or "unspecified"))
    t.outcome.kind = cast(trajectory_pb2.OutcomeKind, kind)  # an int: see `_read_termination`
    if o.get("score") is not None:
        t.outcome.score = float(o["score"])
    t.outcome.confidence = float(o.get("confidence") or 0.0)
    t.outcome.reasons.extend(str(r) for r in o.get("reasons") or ())
    t.outcome.inferred = bool(o.get("inferred"))


def _read_total_usage(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    u = _object(value, field)
    t.total_usage.Clear()
    for name in _USAGE_FIELDS:
        if u.get(name) is not None:
            setattr(t.total_usage, name, int(u[name]))
    t.total_usage.simulated = bool(u.get("simulated"))


def _read_decisions(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
    if not isinstance(value, list):
        raise InvalidArgument(field, "must be a list")
    del t.decisions[:]
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        try:
            _read_decision(t, _object(item, where), where)
        except InvalidArgument:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise InvalidArgument(where, f"malformed decision: {exc}") from exc


def _read_decision(t: trajectory_pb2.Trajectory, d: Mapping[str, Any], field: str) -> None:
    # One `add` with every scalar: the memory recorder builds thousands of decisions per group.
    decision = t.decisions.add(
        head=str(d.get("head") or ""),
        options=[str(o) for o in d.get("options") or ()],
        chosen_index=int(d.get("chosen_index") or 0),
        chosen=str(d.get("chosen") or ""),
        log_prob=float(d.get("log_prob") or 0.0),
        probabilities=[float(p) for p in d.get("probabilities") or ()],
        step_number=int(d.get("step_number") or 0),
        greedy=bool(d.get("greedy")),
    )
    decision.features.update({str(k): float(v) for k, v in (d.get("features") or {}).items()})
    for values in d.get("option_features") or ():
        decision.option_features.add().values.update(
            {str(k): float(v) for k, v in (values.get("values") or {}).items()}
        )
    if d.get("policy") is not None:
        _set_policy(decision.policy, _object(d["policy"], f"{field}.policy"))
    moment = parse_time(d.get("timestamp"))
    if moment is not None:
        # `FromDatetime` for an aware datetime, without its `utctimetuple` round trip.
        decision.timestamp.seconds = (moment - _EPOCH) // _ONE_SECOND
        decision.timestamp.nanos = moment.microsecond * 1000
    if d.get("advantage") is not None:
        decision.advantage = float(d["advantage"])
    if d.get("exploration"):
        decision.exploration = float(d["exploration"])


def _set_policy(policy: trajectory_pb2.PolicyRef, value: Mapping[str, Any]) -> None:
    policy.policy_id = str(value.get("policy_id") or "")
    policy.version = int(value.get("version") or 0)


_Reader = Callable[[trajectory_pb2.Trajectory, Any, str], None]
"""Reads one key of the block into the message (`field` names the key in errors)."""


def _string_setter(name: str) -> _Reader:
    def read(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
        setattr(t, name, str(value))

    return read


def _int_setter(name: str) -> _Reader:
    def read(t: trajectory_pb2.Trajectory, value: Any, field: str) -> None:
        if isinstance(value, bool):
            raise InvalidArgument(field, "must be an integer")
        setattr(t, name, int(value))

    return read


_READERS = (
    *((name, _string_setter(name)) for name in _STRING_FIELDS),
    ("iteration", _int_setter("iteration")),
    ("cost_micro_usd", _int_setter("cost_micro_usd")),
    ("agent", _read_agent),
    ("policy", _read_policy),
    ("labels", _read_labels),
    ("termination_reason", _read_termination),
    ("outcome", _read_outcome),
    ("total_usage", _read_total_usage),
    ("decisions", _read_decisions),
)


# --------------------------------------------------------------------------------------------------
# Writing


def _usage(usage: trajectory_pb2.TokenUsage) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: getattr(usage, name) if usage.HasField(name) else None for name in _USAGE_FIELDS
    }
    if usage.simulated:
        out["simulated"] = True
    return out


def _sorted(entries: Mapping[str, Any]) -> dict[str, Any]:
    # A proto map has no order, and its iteration order changes from one process to the next:
    # sorted keys make the block the same bytes wherever the message was parsed.
    return dict(sorted(entries.items()))


def cohort_section(trajectory: trajectory_pb2.Trajectory) -> dict[str, Any]:
    """Cohort's additions of a message, as the `cohort` key of a recorded file (stable key set)."""
    t = trajectory
    decisions = []
    for d in t.decisions:
        decision: dict[str, Any] = {
            "head": d.head,
            "options": list(d.options),
            "chosen_index": d.chosen_index,
            "chosen": d.chosen,
            "log_prob": d.log_prob,
            "probabilities": list(d.probabilities),
            "features": _sorted(d.features),
            "policy": {"policy_id": d.policy.policy_id, "version": d.policy.version},
            "step_number": d.step_number,
            "timestamp": d.timestamp.ToJsonString() if d.HasField("timestamp") else None,
            "greedy": d.greedy,
        }
        if d.HasField("advantage"):
            decision["advantage"] = d.advantage
        if d.exploration:  # only when set: a file without exploration keeps its key set
            decision["exploration"] = d.exploration
        if len(d.option_features):
            decision["option_features"] = [{"values": _sorted(f.values)} for f in d.option_features]
        decisions.append(decision)
    outcome = None
    if t.HasField("outcome"):
        outcome = {
            "kind": trajectory_pb2.OutcomeKind.Name(t.outcome.kind),
            "score": t.outcome.score if t.outcome.HasField("score") else None,
            "confidence": t.outcome.confidence,
            "reasons": list(t.outcome.reasons),
            "inferred": t.outcome.inferred,
        }
    return {
        "trajectory_id": t.trajectory_id,
        "agent": {"name": t.agent.name, "version": t.agent.version},
        "labels": _sorted(t.labels),
        "job_id": t.job_id,
        "group_id": t.group_id,
        "iteration": t.iteration,
        "query_id": t.query_id,
        "policy": {"policy_id": t.policy.policy_id, "version": t.policy.version},
        "decisions": decisions,
        "termination_reason": trajectory_pb2.TerminationReason.Name(t.termination_reason),
        "termination_detail": t.termination_detail,
        "outcome": outcome,
        # null when unset: an all-null object would read back as a set (empty) usage.
        "total_usage": _usage(t.total_usage) if t.HasField("total_usage") else None,
        "cost_micro_usd": t.cost_micro_usd,
    }
