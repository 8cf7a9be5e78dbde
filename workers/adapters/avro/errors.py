"""The codec's error types: what went wrong is a type and a kind, never a string to compare."""

from __future__ import annotations

import enum


class DecodeFailure(enum.StrEnum):
    """Why bytes could not be turned into a record."""

    GARBAGE = "garbage"
    """The framing is wrong: not a single-object or Confluent header."""
    TRUNCATED = "truncated"
    """The input ends before the header or the body does."""
    UNKNOWN_SCHEMA = "unknown_schema"
    """The fingerprint or registry id names no schema we can read."""
    WRONG_RECORD = "wrong_record"
    """The writer schema is a record of another type than the caller expected."""
    MALFORMED_BODY = "malformed_body"
    """The body does not follow the writer schema, or cannot be resolved to the reader schema."""
    TRAILING_BYTES = "trailing_bytes"
    """The body was read completely but bytes are left over."""


class DecodeError(Exception):
    """The input is not a record of the expected type; ``reason`` says why, ``kind`` classifies it."""

    def __init__(self, kind: DecodeFailure, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class EncodeError(Exception):
    """A value does not fit its schema (wrong type, a decimal that would be rounded, a naive datetime)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaError(Exception):
    """A schema is not valid Avro, or a schema file breaks the catalog's rules."""


class UnknownRecordError(LookupError):
    """The caller named a record the catalog does not hold (a programming error, not bad input)."""


class RegistryError(Exception):
    """The schema registry could not be reached or refused a request; usually worth a retry."""


class SchemaNotFoundError(RegistryError):
    """The schema registry holds no schema with that id."""


class SchemaIncompatibleError(RegistryError):
    """The registry refused a schema under a subject (incompatible with the versions it holds, or invalid).

    Not worth a retry: the same schema is refused again until the subject's history or rule changes.
    """

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"the schema registry refused the schema under subject {subject}: {reason}")
        self.subject = subject
        self.reason = reason
