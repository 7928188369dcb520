"""Secret redaction for trajectories, applied before anything is stored or leaves a recorder.

A secret becomes `[REDACTED:<rule>:<first 8 hex of sha256(secret)>]`: the same secret always maps to
the same placeholder (so one can still tell a key was reused) and different secrets stay
distinguishable, while the placeholder reveals nothing usable. A rule may redact only one capture
group of its match (`group`), which keeps context such as `Bearer ` or the user and host of a URL.

Speed: most text holds no secret, so each built-in rule names literal `triggers`, one of which
must occur for the rule's regex to run at all; a trajectory is first checked as a whole on its
binary serialization (every string field appears there verbatim), so a clean trajectory costs one
serialization and a few substring searches. Rules without triggers (user rules, by default) always
run their regex.

The patterns aim at no false positives on ordinary prose, UUIDs and hex digests: key-like tokens
need their vendor prefix and length, and generic ones (`Bearer`, `Authorization:`) need a token
that looks like one (a digit or symbol, or 20+ characters).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor
from google.protobuf.message import Message


@dataclass(frozen=True)
class RedactionRule:
    """A named secret pattern; `group` is the capture group to replace (0: the whole match)."""

    name: str
    pattern: re.Pattern[str]
    group: int = 0
    # Literal substrings, one of which must occur for the pattern to be tried; empty: always try.
    triggers: tuple[str, ...] = field(default=())


# Characters of a bearer/authorization credential; quotes and backslashes end it so a redaction
# inside JSON text never swallows a string delimiter or an escape, and brackets end it so an
# earlier rule's placeholder is never redacted again.
_TOKEN = r"[A-Za-z0-9\-._~+/]"
_CRED = r"""[^\s"'\\,;\[\]]"""

DEFAULT_RULES: tuple[RedactionRule, ...] = (
    RedactionRule(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            # A key cut off mid-way is still a secret: run to its END line, or to the end of the
            # text or the enclosing JSON string.
            r'[^"]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?=")|\Z)'
        ),
        triggers=("PRIVATE KEY",),
    ),
    RedactionRule(
        "jwt",
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        triggers=("eyJ",),
    ),
    RedactionRule(
        "anthropic_api_key",
        re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,}"),
        triggers=("sk-ant-",),
    ),
    RedactionRule(
        "openai_api_key",
        re.compile(r"(?<![A-Za-z0-9_-])sk-(?!ant-)(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"),
        triggers=("sk-",),
    ),
    RedactionRule(
        "aws_access_key_id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        triggers=("AKIA", "ASIA"),
    ),
    RedactionRule(
        "github_token",
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
        triggers=("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
    ),
    RedactionRule(
        "slack_token",
        re.compile(r"(?<![A-Za-z0-9])xox[abeoprs]-(?=[A-Za-z0-9-]*[0-9])[A-Za-z0-9-]{10,}"),
        triggers=("xox",),
    ),
    RedactionRule(
        "google_api_key",
        re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
        triggers=("AIza",),
    ),
    RedactionRule(
        "authorization_header",
        re.compile(
            r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?i:basic|bearer|token|digest|bot|apikey|api-key|key)\s+)?"
            rf"((?={_CRED}*[0-9+/=_.~-]){_CRED}{{8,}}|{_CRED}{{20,}})"
        ),
        group=1,
        triggers=("uthorization", "UTHORIZATION"),
    ),
    RedactionRule(
        "bearer_token",
        re.compile(rf"\b[Bb]earer\s+((?={_TOKEN}*[0-9]){_TOKEN}{{8,}}=*|{_TOKEN}{{24,}}=*)"),
        group=1,
        triggers=("earer",),
    ),
    RedactionRule(
        "url_password",
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"'\\]*:([^\s@/\"'\\\[\]]+)@"),
        group=1,
        triggers=("://",),
    ),
)


def placeholder(rule_name: str, secret: str) -> str:
    """The deterministic stand-in for `secret`."""
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]
    return f"[REDACTED:{rule_name}:{digest}]"


class Redactor:
    """Applies redaction rules to text, JSON values and trajectories."""

    def __init__(self, rules: Iterable[RedactionRule] = DEFAULT_RULES) -> None:
        self.rules: tuple[RedactionRule, ...] = tuple(rules)
        self._byte_triggers = tuple(
            (rule, tuple(t.encode("utf-8") for t in rule.triggers)) for rule in self.rules
        )

    def with_rules(self, *extra: RedactionRule) -> Redactor:
        """A new redactor with `extra` rules added after these."""
        return Redactor((*self.rules, *extra))

    def redact_text(self, text: str) -> str:
        return self._redact(text)[0]

    def redact_json_value(self, value: Any) -> Any:
        """A copy of a JSON-like value (dicts, lists, tuples, strings) with every string redacted."""
        return self._redact_value(value)[0]

    def redact_trajectory(self, trajectory: Message) -> int:
        """Redact every string field of a message in place; the number of secrets replaced."""
        # Every string field appears verbatim in the serialization, so a rule none of whose
        # triggers occurs there cannot match anywhere: most trajectories stop here.
        rules = _active(self._byte_triggers, trajectory.SerializeToString())
        return self._redact_message(trajectory, rules) if rules else 0

    # -----------------------------------------------------------------------------------------------

    def _redact(self, text: str, rules: Iterable[RedactionRule] | None = None) -> tuple[str, int]:
        total = 0
        for rule in self.rules if rules is None else rules:
            for trigger in rule.triggers:
                if trigger in text:
                    break
            else:
                if rule.triggers:
                    continue
            text, count = rule.pattern.subn(_replacer(rule), text)
            total += count
        return text, total

    def _redact_value(self, value: Any) -> tuple[Any, int]:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            out, total = {}, 0
            for key, item in value.items():
                out[key], count = self._redact_value(item)
                total += count
            return out, total
        if isinstance(value, list | tuple):
            items, total = [], 0
            for item in value:
                redacted, count = self._redact_value(item)
                items.append(redacted)
                total += count
            return (tuple(items) if isinstance(value, tuple) else items), total
        return value, 0

    def _redact_message(self, message: Message, rules: list[RedactionRule]) -> int:
        total = 0
        for field_descriptor, value in message.ListFields():
            kind, repeated = _plan(field_descriptor)
            if kind == _STRING:
                if repeated:
                    for i, item in enumerate(value):
                        redacted, count = self._redact(item, rules)
                        if count:
                            value[i] = redacted
                            total += count
                else:
                    redacted, count = self._redact(value, rules)
                    if count:
                        setattr(message, field_descriptor.name, redacted)
                        total += count
            elif kind == _MESSAGE:
                for item in value if repeated else (value,):
                    total += self._redact_message(item, rules)
            elif kind == _STRING_MAP:
                for key, item in list(value.items()):
                    redacted, count = self._redact(item, rules)
                    if count:
                        value[key] = redacted
                        total += count
            elif kind == _MESSAGE_MAP:
                for item in value.values():
                    total += self._redact_message(item, rules)
        return total


def _active(indexed: tuple[tuple[RedactionRule, tuple[bytes, ...]], ...], data: bytes) -> list[RedactionRule]:
    return [rule for rule, triggers in indexed if not triggers or any(t in data for t in triggers)]


def _replacer(rule: RedactionRule) -> Callable[[re.Match[str]], str]:
    group = rule.group

    def replace(match: re.Match[str]) -> str:
        secret = match.group(group)
        if group == 0:
            return placeholder(rule.name, secret)
        start, end = match.span(group)
        base = match.start()
        whole = match.group(0)
        return whole[: start - base] + placeholder(rule.name, secret) + whole[end - base :]

    return replace


_STRING, _STRING_MAP, _MESSAGE, _MESSAGE_MAP, _OTHER = range(5)
# Per field: what it holds as far as strings go, and whether it is repeated. Descriptors are walked
# on every call, so this is computed once per field.
_PLANS: dict[descriptor.FieldDescriptor, tuple[int, bool]] = {}
_HOLDS_STRINGS: dict[str, bool] = {}


def _plan(field_descriptor: descriptor.FieldDescriptor) -> tuple[int, bool]:
    plan = _PLANS.get(field_descriptor)
    if plan is None:
        plan = _PLANS[field_descriptor] = (_classify(field_descriptor), field_descriptor.is_repeated)
    return plan


def _classify(field_descriptor: descriptor.FieldDescriptor) -> int:
    if field_descriptor.type == descriptor.FieldDescriptor.TYPE_STRING:
        return _STRING
    message_type = field_descriptor.message_type
    if message_type is None:
        return _OTHER
    if message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        if value_field.type == descriptor.FieldDescriptor.TYPE_STRING:
            return _STRING_MAP
        if value_field.message_type is not None and _holds_strings(value_field.message_type):
            return _MESSAGE_MAP
        return _OTHER
    # Timestamps, durations, feature maps: nothing to redact, so not worth descending into.
    return _MESSAGE if _holds_strings(message_type) else _OTHER


def _holds_strings(message_type: descriptor.Descriptor) -> bool:
    known = _HOLDS_STRINGS.get(message_type.full_name)
    if known is not None:
        return known
    _HOLDS_STRINGS[message_type.full_name] = True  # provisional, for recursive types
    holds = False
    for field_descriptor in message_type.fields:
        if field_descriptor.type == descriptor.FieldDescriptor.TYPE_STRING or (
            field_descriptor.message_type is not None and _holds_strings(field_descriptor.message_type)
        ):
            holds = True
            break
    _HOLDS_STRINGS[message_type.full_name] = holds
    return holds


_DEFAULT = Redactor()


def redact_text(text: str) -> str:
    """Redact `text` with the default rules."""
    return _DEFAULT.redact_text(text)


def redact_json_value(value: Any) -> Any:
    """Redact a JSON-like value with the default rules (returns a copy)."""
    return _DEFAULT.redact_json_value(value)


def redact_trajectory(trajectory: Message) -> int:
    """Redact a trajectory in place with the default rules; the number of secrets replaced."""
    return _DEFAULT.redact_trajectory(trajectory)
