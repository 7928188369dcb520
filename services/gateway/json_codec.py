"""Protobuf canonical JSON for the gateway: a fast encoder, a strict parser, string fields from URLs.

`message_to_json` gives what `json_format.MessageToDict(m, always_print_fields_with_no_presence=True)`
gives (lowerCamelCase names, unpopulated fields without presence emitted, 64-bit integers as strings,
enums by name, well-known types in their JSON forms) about five times faster: a plan per message type
is built once from its descriptor, so a request spends its time on values, not on reflection.
`json_format` stays the reference; a unit test compares both on every response message type.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from cohort.services.gateway.errors import invalid_argument

Encoder = Callable[[Any], Any]

_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
"""Types with their own JSON form; `json_format` encodes them."""

_STRING_FORM = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)

_plans: dict[str, Encoder] = {}


def message_to_json(message: Message) -> Any:
    """The canonical JSON value (a dict, or a string for Timestamp and the like) of `message`."""
    return _encoder_for(message.DESCRIPTOR)(message)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""One encoder for every response: `json.dumps` with options builds a new one on each call."""


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


MEMO_MAX_BYTES = 16 * 1024
"""Responses up to this size have their JSON text remembered by content (`message_json_text`)."""


def message_json_text(message: Message) -> str:
    """`dumps(message_to_json(message))`, remembered for the last few small responses by their bytes.

    Clients polling one job get the same `GetJobResponse` until its revision changes; encoding it to
    JSON once per revision instead of once per request saves most of the gateway's encoding work.
    """
    # The size first: a large response (an export page) is neither serialized for a key nor kept.
    if message.ByteSize() > MEMO_MAX_BYTES:
        return dumps(message_to_json(message))
    return _remembered_json_text(type(message), message.SerializeToString(deterministic=True))


@functools.lru_cache(maxsize=256)
def _remembered_json_text(message_class: type[Message], data: bytes) -> str:
    return dumps(message_to_json(message_class.FromString(data)))


def _encoder_for(descriptor: Descriptor) -> Encoder:
    encoder = _plans.get(descriptor.full_name)
    if encoder is None:
        encoder = _plans[descriptor.full_name] = _build_encoder(descriptor)
    return encoder


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _float32(value: float) -> Any:
    return _float(type_checkers.ToShortestFloat(value)) if math.isfinite(value) else _float(value)


def _scalar_encoder(field: FieldDescriptor) -> Encoder:
    kind = field.type
    if kind in _INT64_TYPES:
        return str
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _float
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _float32
    if kind == FieldDescriptor.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode("ascii")
    if kind == FieldDescriptor.TYPE_ENUM:
        names = {number: value.name for number, value in field.enum_type.values_by_number.items()}
        return lambda value: names.get(value, value)
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        message_type = field.message_type
        return lambda value: _encoder_for(message_type)(value)
    return lambda value: value  # bool, string, 32-bit integers


def _map_key(field: FieldDescriptor) -> Encoder:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return lambda key: "true" if key else "false"
    return str


def _default_of(field: FieldDescriptor) -> Callable[[], Any] | None:
    """What an unpopulated field prints as, or None when it is not printed (it has presence)."""
    if _is_map(field):
        return dict
    if _is_repeated(field):
        return list
    if field.has_presence:
        return None
    value = _scalar_encoder(field)(field.default_value)
    return lambda: value


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _is_map(field: FieldDescriptor) -> bool:
    return (
        _is_repeated(field)
        and field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
    )


_TIMESTAMP_SECONDS_MIN = -62135596800  # 0001-01-01T00:00:00Z
_TIMESTAMP_SECONDS_MAX = 253402300799  # 9999-12-31T23:59:59Z
_EPOCH = datetime.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _whole_seconds(seconds: int) -> str:
    return (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()


def _fraction(nanos: int, unit: str) -> str:
    """`Timestamp.ToJsonString`'s fractional digits: none, 3, 6 or 9 as the value needs."""
    if nanos == 0:
        return unit
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}{unit}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}{unit}"
    return f".{nanos:09d}{unit}"


def _timestamp(message: Message) -> str:
    """`Timestamp.ToJsonString`, with the date of each second formatted once (times repeat)."""
    seconds, nanos = message.seconds, message.nanos
    if not (_TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return message.ToJsonString()  # raises its ValueError
    return _whole_seconds(seconds) + _fraction(nanos, "Z")


def _build_encoder(descriptor: Descriptor) -> Encoder:
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamp
    if descriptor.full_name in _STRING_FORM:
        return lambda message: message.ToJsonString()
    if descriptor.full_name in _WELL_KNOWN:
        return lambda message: json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    plan: list[tuple[FieldDescriptor, str, Encoder]] = []
    defaults: list[tuple[FieldDescriptor, str, Callable[[], Any]]] = []
    for field in descriptor.fields:
        if _is_map(field):
            key_of = _map_key(field.message_type.fields_by_name["key"])
            value_of = _scalar_encoder(field.message_type.fields_by_name["value"])

            def encode(value, key_of=key_of, value_of=value_of):
                return {key_of(k): value_of(v) for k, v in value.items()}

        elif _is_repeated(field):
            item_of = _scalar_encoder(field)

            def encode(value, item_of=item_of):
                return [item_of(item) for item in value]

        else:
            encode = _scalar_encoder(field)
        plan.append((field, field.json_name, encode))
        default = _default_of(field)
        if default is not None:
            defaults.append((field, field.json_name, default))
    encoders = {field: (name, encode) for field, name, encode in plan}
    scalar_defaults = {name: default() for _f, name, default in defaults if default not in (list, dict)}
    container_defaults = [(name, default) for _f, name, default in defaults if default in (list, dict)]

    def encode_message(message: Message) -> dict:
        out = dict(scalar_defaults)
        for name, default in container_defaults:
            out[name] = default()
        for field, value in message.ListFields():
            entry = encoders.get(field)
            if entry is not None:  # extensions are not part of the JSON form
                out[entry[0]] = entry[1](value)
        return out

    return encode_message


# --- input


class BadJson(Exception):
    """The body is not valid JSON (or nests too deeply, or uses NaN/Infinity literals)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
"""One decoder for every request: `json.loads` with hooks builds a new one on each call."""


def loads(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity literals; any failure is `BadJson` with a short reason."""
    try:
        text = body.decode("utf-8")
        if text.startswith("\ufeff"):  # what `json.loads` checks before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise BadJson("the body is not UTF-8") from exc
    except RecursionError as exc:
        raise BadJson("the JSON nests too deeply") from exc
    except ValueError as exc:  # JSONDecodeError included
        raise BadJson(str(exc)) from exc


_FIELD_IN_ERROR = re.compile(r"Failed to parse (\w+) field")


def parse_into(value: Any, message: Message, *, where: str = "") -> None:
    """Fills `message` from a canonical-JSON dict. An unknown field is an error, as a wrong type is: a
    typo such as `grup_size` must not run a job with the default. Both raise a 400 (`GatewayError`)
    naming the field path, e.g. `job.spec.grup_size` or `job.spec.groupSize`.
    """
    if not isinstance(value, dict):
        raise invalid_argument(where or "body", f"must be a JSON object, not {_json_type(value)}")
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as exc:
        text = str(exc)
        # The parser's own message says which type lacks the field but not where the key sits, and
        # its path is the message types'; the walk finds the key's path as the caller wrote it.
        unknown = _unknown_field(value, message.DESCRIPTOR) if "has no field named" in text else None
        if unknown is not None:
            path, descriptor, key = unknown
            raise invalid_argument(_join(where, path), _unknown_reason(descriptor, key)) from None
        path = ".".join(_FIELD_IN_ERROR.findall(text))
        raise invalid_argument(_join(where, path), _short_reason(text)) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        raise invalid_argument(where or "body", f"cannot be read as {message.DESCRIPTOR.name}") from exc


def _join(where: str, path: str) -> str:
    if not where or not path:
        return where or path
    return f"{where}{path}" if path.startswith("[") else f"{where}.{path}"


def _unknown_field(value: Any, descriptor: Descriptor, depth: int = 0) -> tuple[str, Descriptor, str] | None:
    """The first key of `value`, at any depth, that names no field: (its path, the message type
    that lacks it, the key). Runs only after the parser failed, so it costs nothing on valid input.
    Well-known types (Struct, Any, ...) have JSON forms of their own and are not entered."""
    if not isinstance(value, dict) or descriptor.full_name in _WELL_KNOWN or depth > 100:
        return None
    for key, item in value.items():
        field = find_field(descriptor, key) if isinstance(key, str) else None
        if field is None:
            return str(key), descriptor, str(key)
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        found = None
        if _is_map(field):
            continue  # no map of the API has message values; the parser's own error covers one
        if _is_repeated(field) and isinstance(item, list):
            for index, element in enumerate(item):
                found = _unknown_field(element, field.message_type, depth + 1)
                if found is not None:
                    found = (f"[{index}].{found[0]}", *found[1:])
                    break
        else:
            found = _unknown_field(item, field.message_type, depth + 1)
            if found is not None:
                found = (f".{found[0]}", *found[1:])
        if found is not None:
            return f"{key}{found[0]}", found[1], found[2]
    return None


def _unknown_reason(descriptor: Descriptor, key: str) -> str:
    names = sorted({name for field in descriptor.fields for name in (field.name, field.json_name)})
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field: {descriptor.name} has no field {key[:100]!r}{hint}"


def _short_reason(message: str) -> str:
    """The innermost reason of a nested `ParseError` message, without the Python-isms."""
    reason = message.rsplit(" field: ", 1)[-1].strip().rstrip(".")
    reason = re.sub(r" at [\w.\[\]]+$", "", reason)
    return reason[:300] or "invalid value"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"


# --- fields from strings (path variables and query parameters)


def find_field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON name (grpc-gateway accepts both)."""
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in descriptor.fields:
        if candidate.json_name == name:
            return candidate
    return None


def set_from_strings(message: Message, path: str, values: list[str], *, strict: bool) -> None:
    """Sets the field at dotted `path` (`filter.job_id`) from URL strings; repeated fields take all.

    With `strict` (path variables) an unknown field is an error; query parameters that name no field
    are ignored, as grpc-gateway does.
    """
    parts = path.split(".")
    target = message
    for depth, part in enumerate(parts):
        field = find_field(target.DESCRIPTOR, part)
        if field is None:
            if strict:
                raise invalid_argument(path, f"{target.DESCRIPTOR.full_name} has no field {part!r}")
            return
        last = depth == len(parts) - 1
        if not last:
            if field.type != FieldDescriptor.TYPE_MESSAGE or _is_repeated(field):
                raise invalid_argument(path, f"{part!r} is not a message field, so it has no sub-fields")
            target = getattr(target, field.name)
            continue
        if _is_map(field):
            raise invalid_argument(path, "map fields cannot be set from the URL")
        if _is_repeated(field):
            container = getattr(target, field.name)
            for value in values:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    parse_into_from_string(container.add(), value, path)
                else:
                    container.append(_convert(field, value, path))
            return
        if len(values) != 1:
            raise invalid_argument(path, f"takes one value, got {len(values)}")
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            parse_into_from_string(getattr(target, field.name), values[0], path)
        else:
            try:
                setattr(target, field.name, _convert(field, values[0], path))
            except (TypeError, ValueError) as exc:
                raise invalid_argument(path, f"{values[0]!r} is out of range") from exc


def parse_into_from_string(message: Message, value: str, path: str) -> None:
    """A message-typed field from one URL string: well-known types with a string JSON form
    (Timestamp, Duration, FieldMask, wrappers)."""
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise invalid_argument(path, f"{value!r} is not a valid {message.DESCRIPTOR.name}") from exc


_INT_TYPES = _INT64_TYPES | {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}


def _convert(field: FieldDescriptor, raw: str, path: str) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return raw
    try:
        if kind in _INT_TYPES:
            value = int(raw)
            checker = type_checkers.GetTypeChecker(field)
            checker.CheckValue(value)
            return value
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return float(raw)
        if kind == FieldDescriptor.TYPE_BOOL:
            if raw.lower() in ("true", "1"):
                return True
            if raw.lower() in ("false", "0"):
                return False
            raise ValueError(raw)
        if kind == FieldDescriptor.TYPE_BYTES:
            padded = raw + "=" * (-len(raw) % 4)
            return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        if kind == FieldDescriptor.TYPE_ENUM:
            by_name = field.enum_type.values_by_name.get(raw)
            if by_name is not None:
                return by_name.number
            number = int(raw)
            if number not in field.enum_type.values_by_number:
                raise ValueError(raw)
            return number
    except (ValueError, TypeError, OverflowError) as exc:
        expected = _EXPECTED.get(kind, "a value of the field's type")
        if kind == FieldDescriptor.TYPE_ENUM:
            expected = "one of " + ", ".join(v.name for v in field.enum_type.values)
        raise invalid_argument(path, f"{raw[:100]!r} is not {expected}") from exc
    raise invalid_argument(path, "cannot be set from a string")


_EXPECTED = {
    **{kind: "an integer in range" for kind in _INT_TYPES},
    FieldDescriptor.TYPE_DOUBLE: "a number",
    FieldDescriptor.TYPE_FLOAT: "a number",
    FieldDescriptor.TYPE_BOOL: "true or false",
    FieldDescriptor.TYPE_BYTES: "base64",
}
