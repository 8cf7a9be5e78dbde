"""What a failure in the consume loop says about the record: retry it, or set the record aside.

An infrastructure error (a connection lost, a timeout, the broker or the database away) says nothing about
the records: they are retried with back-off for as long as it lasts. An error caused by the record itself
(a value PostgreSQL, the domain or the encoder refuses) fails the same way on every retry: the record is
found and dead-lettered so the records behind it go on. Anything else is unknown: retried a bounded number
of times, then treated as the record's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from aiokafka.errors import KafkaError

from workers.adapters.avro import EncodeError


class ErrorKind(enum.StrEnum):
    INFRASTRUCTURE = "infrastructure"
    RECORD = "record"
    UNKNOWN = "unknown"


Classifier = Callable[[BaseException], ErrorKind]

# Errors raised for values that are refused (ValueError covers UnicodeError, ArithmeticError covers
# decimal.InvalidOperation; EncodeError: a value the contract's schema cannot carry): the same value fails
# the same way every time.
_RECORD_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, ArithmeticError, EncodeError)
# OSError covers ConnectionError and TimeoutError.
_INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (OSError, KafkaError)


def classify_error(exc: BaseException) -> ErrorKind:
    """The kind of ``exc``, by its type."""
    if isinstance(exc, _INFRASTRUCTURE_ERRORS):
        return ErrorKind.INFRASTRUCTURE
    if isinstance(exc, _RECORD_ERRORS):
        return ErrorKind.RECORD
    return ErrorKind.UNKNOWN


def classifier(*more: Callable[[BaseException], ErrorKind | None]) -> Classifier:
    """:func:`classify_error` after ``more`` (each returns a kind, or None when it does not know ``exc``)."""

    def classify(exc: BaseException) -> ErrorKind:
        for each in more:
            kind = each(exc)
            if kind is not None:
                return kind
        return classify_error(exc)

    return classify


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def describe(exc: BaseException, limit: int = 500) -> str:
    """One bounded line naming ``exc``: its type and message, control characters shown escaped."""
    message = str(exc).replace("\n", " ")
    line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return bounded(printable(line), limit)


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (a reason or a log line stays one safe line)."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
