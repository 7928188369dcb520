"""Task families, query generation (train and held-out splits) and the success checker.

Each family's correct solution is a fixed tool sequence (`SOLUTIONS`); the text family has one
sequence per text operation. Train and held-out queries differ in everything a policy could
memorize: entities (the knowledge base assigns each to one split), numbers (train operands and
values 1-50, train dividends 101-2401; held-out operands and values 51-100, dividends from 2601)
and phrasing (each split has its own templates, and spells some units differently). Generation is
deterministic in (split, count, seed, families); queries cycle through the requested families in
order, so every family is represented.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from cohort.api.collector.v1 import collector_pb2
from cohort.platform.errors import InvalidArgument
from cohort.sdk.runtime import Task
from cohort.sdk.toolbench import knowledge
from cohort.sdk.toolbench.tools import (
    convert_value,
    evaluate,
    format_number,
    verification_code,
    verified_answer,
)

SPLITS = ("train", "heldout")
# The package's name before it moved under cohort.sdk, kept: it seeds every query set, so a new
# value would change the datasets (and every result measured on them) for the same seed.
_SEED_NAMESPACE = "cohort.toolbench"

SOLUTIONS: Mapping[str, tuple[str, ...]] = {
    "arithmetic": ("calculator",),
    "unit_conversion": ("convert_units",),
    "kb_fact": ("kb_lookup",),
    "lookup_reverse": ("kb_lookup", "reverse_text"),
    "lookup_uppercase": ("kb_lookup", "uppercase_text"),
    "lookup_count": ("kb_lookup", "count_letters"),
    "multi_hop": ("kb_lookup", "kb_lookup", "calculator"),
    "multi_hop_convert": ("kb_lookup", "kb_lookup", "calculator", "convert_units"),
    "verified_calc": ("calculator", "verify"),
}
"""Intent -> the tool calls that solve it, in order (then the `answer` action)."""

FAMILY_INTENTS: Mapping[str, tuple[str, ...]] = {
    "arithmetic": ("arithmetic",),
    "unit_conversion": ("unit_conversion",),
    "kb_fact": ("kb_fact",),
    "text": ("lookup_reverse", "lookup_uppercase", "lookup_count"),
    "multi_hop": ("multi_hop",),
    "multi_hop_convert": ("multi_hop_convert",),
    "verified_calc": ("verified_calc",),
}
"""Family -> the intents (solution variants) its queries have."""

FAMILIES: tuple[str, ...] = tuple(FAMILY_INTENTS)

_OPS = ("+", "-", "*", "/")
_OP_WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
_OP_NOUNS = {"+": "sum", "-": "difference", "*": "product", "/": "quotient"}
_OP_VERBS = {"+": "add", "-": "subtract", "*": "multiply it by", "/": "divide it by"}

# Unit spellings per split: held-out queries spell several units differently.
_UNIT_NAMES = {
    "train": {
        "km": "kilometers",
        "mi": "miles",
        "kg": "kilograms",
        "lb": "pounds",
        "c": "degrees Celsius",
        "f": "degrees Fahrenheit",
        "l": "liters",
        "gal": "gallons",
        "ft": "feet",
        "m": "meters",
        "in": "inches",
        "cm": "centimeters",
    },
    "heldout": {
        "km": "kilometres",
        "mi": "miles",
        "kg": "kilos",
        "lb": "lbs",
        "c": "Celsius",
        "f": "Fahrenheit",
        "l": "litres",
        "gal": "gallons",
        "ft": "ft",
        "m": "metres",
        "in": "inches",
        "cm": "centimetres",
    },
}
_CONVERSIONS = (
    ("km", "mi"),
    ("mi", "km"),
    ("kg", "lb"),
    ("lb", "kg"),
    ("c", "f"),
    ("f", "c"),
    ("l", "gal"),
    ("gal", "l"),
    ("ft", "m"),
    ("m", "ft"),
    ("in", "cm"),
)

# family -> split -> templates. Placeholders: a, b, op_word, op_noun, op_verb (arithmetic);
# x, src, dst (conversion); country, mountain, m1, m2 (knowledge).
TEMPLATES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "arithmetic": {
        "train": (
            "What is {a} {op_word} {b}?",
            "Compute {a} {op_word} {b}.",
            "Calculate {a} {op_word} {b}, please.",
        ),
        "heldout": (
            "Work out the {op_noun} of {a} and {b}.",
            "Take {a} and {op_verb} {b}. What do you get?",
        ),
    },
    "unit_conversion": {
        "train": (
            "Convert {x} {src} to {dst}.",
            "How many {dst} is {x} {src}?",
        ),
        "heldout": (
            "Express {x} {src} in {dst}.",
            "{x} {src} equals how many {dst}?",
            "What does {x} {src} come to in {dst}?",
        ),
    },
    "kb_fact": {
        "train": (
            "What is the capital of {country}?",
            "Which city is the capital of {country}?",
            "How high is {mountain}?",
            "What is the height of {mountain}?",
        ),
        "heldout": (
            "Name the capital city of {country}.",
            "{country} has its capital in which city?",
            "How tall is {mountain}?",
            "Tell me the elevation of {mountain}.",
        ),
    },
    "lookup_reverse": {
        "train": ("Write the capital of {country} backwards.", "What is the capital of {country} reversed?"),
        "heldout": ("Spell the capital city of {country} in reverse order.",),
    },
    "lookup_uppercase": {
        "train": ("What is the capital of {country} in uppercase?",),
        "heldout": (
            "Give the capital city of {country} in all caps.",
            "Spell {country}'s capital in capital letters.",
        ),
    },
    "lookup_count": {
        "train": ("How many letters are in the name of the capital of {country}?",),
        "heldout": (
            "Count the letters of the capital city of {country}.",
            "What is the number of letters in {country}'s capital?",
        ),
    },
    "multi_hop": {
        "train": (
            "How many meters higher is {m1} than {m2}?",
            "What is the difference in height between {m1} and {m2}?",
        ),
        "heldout": (
            "By how much does {m1} exceed {m2} in elevation?",
            "Find the elevation gap between {m1} and {m2}.",
        ),
    },
    "multi_hop_convert": {
        "train": (
            "How many feet taller is {m1} than {m2}?",
            "What is the difference in height between {m1} and {m2}, in feet?",
        ),
        "heldout": (
            "By how many ft does {m1} exceed {m2} in elevation?",
            "Express the elevation gap between {m1} and {m2} in ft.",
        ),
    },
    "verified_calc": {
        "train": (
            "Compute {a} {op_word} {b} and verify the result before answering.",
            "What is {a} {op_word} {b}? Verify it and include the verification code.",
        ),
        "heldout": (
            "Work out the {op_noun} of {a} and {b}; double-check it and report the check code.",
            "Take {a} and {op_verb} {b}, then confirm the result with a check before you answer.",
        ),
    },
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidArgument("split", f"must be one of {', '.join(SPLITS)}, not {split!r}")


def check_families(families: Sequence[str], field: str = "families") -> tuple[str, ...]:
    """The families asked for (all when empty), validated."""
    if isinstance(families, str):
        families = (families,)
    unknown = [f for f in families if f not in FAMILY_INTENTS]
    if unknown:
        raise InvalidArgument(field, f"unknown task families {unknown}; known: {', '.join(FAMILIES)}")
    return tuple(dict.fromkeys(families)) or FAMILIES


def _operands(rng: random.Random, split: str) -> tuple[int, str, int]:
    low, high = (2, 49) if split == "train" else (51, 98)
    op = rng.choice(_OPS)
    a, b = rng.randint(low, high), rng.randint(low, high)
    if op == "-" and a < b:
        a, b = b, a
    if op == "/":
        # Exact division, divisor and quotient in the split's range. A train dividend is at most
        # 49 * 49 = 2401 < 51 * 51; it is kept above 100 so it never equals a held-out number.
        while split == "train" and a * b <= 100:
            a, b = rng.randint(low, high), rng.randint(low, high)
        a = a * b
    return a, op, b


def _make(family: str, intent: str, split: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """(text, expected answer, params) of one query."""
    templates = TEMPLATES[intent][split]
    template_index = rng.randrange(len(templates))
    template = templates[template_index]
    params: dict[str, Any] = {"template": f"{intent}/{split}/{template_index}"}
    if intent in ("arithmetic", "verified_calc"):
        a, op, b = _operands(rng, split)
        text = template.format(a=a, b=b, op_word=_OP_WORDS[op], op_noun=_OP_NOUNS[op], op_verb=_OP_VERBS[op])
        expression = f"{a} {op} {b}"
        value = format_number(evaluate(expression))
        answer = value
        if intent == "verified_calc":
            answer = verified_answer(value, verification_code(expression, value))
        params.update(numbers=[a, b], op=op)
    elif intent == "unit_conversion":
        src, dst = rng.choice(_CONVERSIONS)
        x = rng.randint(1, 50) if split == "train" else rng.randint(51, 100)
        names = _UNIT_NAMES[split]
        text = template.format(x=x, src=names[src], dst=names[dst])
        answer = format_number(convert_value(x, src, dst))
        params.update(numbers=[x], from_unit=src, to_unit=dst)
    elif intent in ("kb_fact",) and "{mountain}" in template:
        mountain = rng.choice(knowledge.MOUNTAINS[split])
        text = template.format(mountain=mountain)
        answer = str(knowledge.height_of(mountain))
        params.update(entities=[mountain], attribute="height")
    elif intent in ("kb_fact", "lookup_reverse", "lookup_uppercase", "lookup_count"):
        country = rng.choice(knowledge.COUNTRIES[split])
        text = template.format(country=country)
        capital = knowledge.capital_of(country)
        if intent == "kb_fact":
            answer = capital
        elif intent == "lookup_reverse":
            answer = capital[::-1]
        elif intent == "lookup_uppercase":
            answer = capital.upper()
        else:
            answer = str(sum(1 for c in capital if c.isalpha()))
        params.update(entities=[country], attribute="capital")
    else:  # multi_hop, multi_hop_convert
        m1, m2 = rng.sample(knowledge.MOUNTAINS[split], 2)
        if knowledge.height_of(m1) < knowledge.height_of(m2):
            m1, m2 = m2, m1
        text = template.format(m1=m1, m2=m2)
        gap = knowledge.height_of(m1) - knowledge.height_of(m2)
        if intent == "multi_hop":
            answer = str(gap)
        else:
            answer = format_number(convert_value(gap, knowledge.HEIGHT_UNIT, "ft"))
        params.update(entities=[m1, m2], attribute="height")
    return text, answer, params


def generate_queries(
    split: str, count: int, seed: int = 0, families: Sequence[str] = ()
) -> list[collector_pb2.Query]:
    """`count` queries of `split` ("train" or "heldout"), the same for the same arguments.

    Query i belongs to family `families[i % len(families)]` (all families when empty); the
    payload (JSON) holds the family, intent, split, template id, parameters and the solution's
    tool sequence; its stratum is the intent.
    """
    _check_split(split)
    chosen = check_families(families)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidArgument("count", f"must be a non-negative integer, not {count!r}")
    rng = random.Random(f"{_SEED_NAMESPACE}/{split}/{int(seed)}")
    queries = []
    for i in range(count):
        family = chosen[i % len(chosen)]
        intent = rng.choice(FAMILY_INTENTS[family])
        text, answer, params = _make(family, intent, split, rng)
        payload = {
            "family": family,
            "intent": intent,
            "split": split,
            **params,
            "solution": list(SOLUTIONS[intent]),
        }
        queries.append(
            collector_pb2.Query(
                query_id=f"toolbench-{split}-{seed}-{i:05d}",
                text=text,
                payload_json=json.dumps(payload, separators=(",", ":")),
                expected_answer=answer,
                stratum=intent,
            )
        )
    return queries


def task_from_query(query: collector_pb2.Query) -> Task:
    """The `Task` an agent receives for `query` (its payload parsed from JSON)."""
    payload: Any = {}
    if query.payload_json:
        try:
            payload = json.loads(query.payload_json)
        except ValueError as exc:
            raise InvalidArgument("query.payload_json", f"is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise InvalidArgument("query.payload_json", "must be a JSON object")
    return Task(
        query_id=query.query_id, text=query.text, payload=payload, expected_answer=query.expected_answer
    )


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def check_answer(task: Task, answer: str) -> bool:
    """Whether `answer` solves `task`: numbers equal (to 1e-6 relative), any other text exactly.

    Surrounding whitespace is ignored; text is case-sensitive (`PARIS` answers an uppercase task,
    `Paris` does not). A task without an expected answer cannot be solved.
    """
    expected = (task.expected_answer or "").strip()
    given = (answer or "").strip()
    if not expected or not given:
        return False
    expected_number, given_number = _as_number(expected), _as_number(given)
    if expected_number is not None and given_number is not None:
        return abs(expected_number - given_number) <= 1e-6 * max(1.0, abs(expected_number))
    return " ".join(given.split()) == " ".join(expected.split())
