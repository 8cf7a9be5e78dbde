"""Rules for text that comes from outside: no control characters, bounded lengths.

A value that breaks them cannot be stored (PostgreSQL refuses NUL), logged or echoed safely, so it is
refused where it enters, naming the field. The maximum lengths are the ones the schema docs state.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Characters no text of ours holds: C0/C1 controls, surrogates, private use, unassigned code points, line
# and paragraph separators, and the bidirectional overrides that make a log line lie.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# An id is compared and looked up: no invisible format characters (zero-width, BOM) and no space other
# than the ASCII one, which would make two ids look the same.
_REFUSED_IN_IDS = frozenset({"Cf", "Zs"})

_FREE_TEXT = frozenset({"source", "reason"})

ORDER_ID_MAX = 64  # a UUID is 36 characters
ACCOUNT_MAX = 32
INSTRUMENT_ID_MAX = 128
SOURCE_MAX = 128
CANCEL_REASON_MAX = 512
OCA_GROUP_MAX = 64


@dataclass(frozen=True)
class TextProblem:
    """Why the value of ``field`` is refused, in a sentence a person can act on."""

    field: str
    problem: str

    @property
    def text(self) -> str:
        return f"{self.field} {self.problem}"


def refused(ch: str, *, free_text: bool = False) -> bool:
    """Whether ``ch`` may not be in a text (an id when not ``free_text``)."""
    if ch in _BIDI_CONTROLS:
        return True
    category = unicodedata.category(ch)
    return category in _REFUSED_CATEGORIES or (not free_text and category in _REFUSED_IN_IDS and ch != " ")


def text_problem(name: str, value: str | None, max_length: int, *, free_text: bool = False) -> TextProblem | None:
    """What is wrong with ``value`` (None when nothing is, or when there is no value).

    ``free_text`` (a source, a reason) may hold format characters (an emoji's joiners) an id may not.
    """
    if value is None:
        return None
    if len(value) > max_length:
        return TextProblem(name, f"is {len(value)} characters long, more than {max_length}")
    for position, ch in enumerate(value):
        if refused(ch, free_text=free_text):
            return TextProblem(name, f"contains the control character U+{ord(ch):04X} at position {position}")
    return None


def escaped(value: str, max_length: int) -> str:
    """``value`` with the characters an id may not hold written as escapes, cut to ``max_length``."""
    text = "".join(ch.encode("unicode_escape").decode("ascii") if refused(ch) else ch for ch in value)
    return text if len(text) <= max_length else text[: max_length - 1] + "…"


def first_problem(*checks: tuple[str, str | None, int]) -> TextProblem | None:
    """The first problem among ``(field, value, max_length)`` checks, in the order given.

    ``source`` and ``reason`` are free text; every other field is an id.
    """
    for name, value, max_length in checks:
        problem = text_problem(name, value, max_length, free_text=name in _FREE_TEXT)
        if problem is not None:
            return problem
    return None
