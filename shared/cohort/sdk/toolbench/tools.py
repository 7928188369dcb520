"""The toolbench tools: small deterministic functions that raise `ToolError` on wrong arguments.

Values travel as strings (as they would between an LLM and its tools). Numbers are written by
`format_number`: integers without a decimal point, anything else rounded to 2 decimals with
trailing zeros dropped, so the agent, the generator and the checker all spell a result one way.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from cohort.sdk.toolbench.knowledge import KNOWLEDGE_BASE


class ToolError(ValueError):
    """A tool was called with wrong arguments; the message says which and why."""


# --------------------------------------------------------------------------------------------------
# Numbers


def format_number(value: float) -> str:
    """`12`, `19.31`, `-3.5`: integral values without a point, others to 2 decimals."""
    if not math.isfinite(value):
        raise ToolError(f"result {value} is not a finite number")
    rounded = round(value, 2)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.2f}".rstrip("0").rstrip(".")


def parse_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise ToolError(f"{name} is required and must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ToolError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ToolError(f"{name} must be finite, not {value!r}")
    return number


# --------------------------------------------------------------------------------------------------
# calculator

_EXPRESSION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)\s*$")


def evaluate(expression: str) -> float:
    """The value of `a <op> b` (op one of + - * /)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("expression is required, e.g. '12 * 7'")
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ToolError(f"expression {expression!r} is not of the form '<number> <+|-|*|/> <number>'")
    a, op, b = float(match[1]), match[2], float(match[3])
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ToolError("division by zero")
    return a / b


def calculator(expression: str = "") -> str:
    """Evaluates one binary operation: `calculator(expression="37 * 12")` -> `"444"`."""
    return format_number(evaluate(expression))


# --------------------------------------------------------------------------------------------------
# convert_units

# unit -> (dimension, factor to the dimension's base unit); temperatures are converted apart.
UNITS: Mapping[str, tuple[str, float]] = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "cm": ("length", 0.01),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "in": ("length", 0.0254),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
    "c": ("temperature", 1.0),
    "f": ("temperature", 1.0),
}


def convert_value(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit` expressed in `to_unit` (unrounded)."""
    if from_unit not in UNITS:
        raise ToolError(f"from_unit {from_unit!r} is not a known unit ({', '.join(UNITS)})")
    if to_unit not in UNITS:
        raise ToolError(f"to_unit {to_unit!r} is not a known unit ({', '.join(UNITS)})")
    dimension, factor = UNITS[from_unit]
    to_dimension, to_factor = UNITS[to_unit]
    if dimension != to_dimension:
        raise ToolError(f"cannot convert {dimension} ({from_unit}) to {to_dimension} ({to_unit})")
    if dimension == "temperature":
        celsius = value if from_unit == "c" else (value - 32.0) * 5.0 / 9.0
        return celsius if to_unit == "c" else celsius * 9.0 / 5.0 + 32.0
    return value * factor / to_factor


def convert_units(value: Any = None, from_unit: str = "", to_unit: str = "") -> str:
    """`convert_units(value="12", from_unit="km", to_unit="mi")` -> `"7.46"`."""
    number = parse_number(value, "value")
    if from_unit == to_unit and from_unit:
        raise ToolError(f"from_unit and to_unit are both {from_unit!r}: nothing to convert")
    return format_number(convert_value(number, from_unit or "", to_unit or ""))


# --------------------------------------------------------------------------------------------------
# kb_lookup

_ENTITY_KEYS = {name.lower(): name for name in KNOWLEDGE_BASE}


def kb_lookup(entity: str = "", attribute: str = "") -> str:
    """`kb_lookup(entity="France", attribute="capital")` -> `"Paris"` (heights in metres)."""
    if not entity:
        raise ToolError("entity is required")
    name = _ENTITY_KEYS.get(str(entity).strip().lower())
    if name is None:
        raise ToolError(f"entity {entity!r} is not in the knowledge base")
    record = KNOWLEDGE_BASE[name]
    if not attribute or attribute == "kind" or attribute not in record:
        known = ", ".join(k for k in record if k != "kind")
        raise ToolError(f"attribute {attribute!r} is not known for {name} (known: {known})")
    return record[attribute]


# --------------------------------------------------------------------------------------------------
# text tools


def _text(text: Any) -> str:
    if not isinstance(text, str) or not text:
        raise ToolError("text is required")
    return text


def reverse_text(text: str = "") -> str:
    """`reverse_text(text="Paris")` -> `"siraP"`."""
    return _text(text)[::-1]


def uppercase_text(text: str = "") -> str:
    """`uppercase_text(text="Paris")` -> `"PARIS"`."""
    return _text(text).upper()


def count_letters(text: str = "") -> str:
    """`count_letters(text="Buenos Aires")` -> `"11"` (letters only: spaces and digits do not count)."""
    return str(sum(1 for c in _text(text) if c.isalpha()))


# --------------------------------------------------------------------------------------------------
# verify


def verification_code(expression: str, value: str) -> str:
    """The code `verify` issues for a checked `expression = value` (part of the answer format)."""
    return hashlib.blake2b(f"{expression}={value}".encode(), digest_size=3).hexdigest()


def verified_answer(value: str, code: str) -> str:
    return f"{value} [verified:{code}]"


def verify(expression: str = "", value: str = "") -> str:
    """Recomputes `expression` independently; returns a verification code when it equals `value`."""
    if not value:
        raise ToolError("value is required")
    expected = format_number(evaluate(expression))
    if format_number(parse_number(value, "value")) != expected:
        raise ToolError(f"verification failed: {expression} is {expected}, not {value}")
    return verification_code(expression.strip(), expected)


# --------------------------------------------------------------------------------------------------

TOOLS: Mapping[str, Callable[..., str]] = {
    "calculator": calculator,
    "convert_units": convert_units,
    "kb_lookup": kb_lookup,
    "reverse_text": reverse_text,
    "uppercase_text": uppercase_text,
    "count_letters": count_letters,
    "verify": verify,
}
"""Tool name -> function (keyword arguments, string result, `ToolError` on wrong arguments)."""


def call_tool(name: str, arguments: Mapping[str, Any]) -> tuple[bool, str]:
    """(True, result) or (False, error message); an unknown tool or argument is an error too."""
    tool = TOOLS.get(name)
    if tool is None:
        return False, f"unknown tool {name!r}"
    try:
        return True, tool(**arguments)
    except ToolError as exc:
        return False, str(exc)
    except TypeError as exc:  # unexpected keyword arguments
        return False, f"wrong arguments for {name}: {exc}"
