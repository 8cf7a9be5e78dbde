"""Errors raised by the PostgreSQL adapter, as types callers can catch."""

from __future__ import annotations

import psycopg


class MigrationError(Exception):
    """The schema cannot be migrated (an applied migration was edited, a file is misnamed, ...)."""


class UnknownInstrument(LookupError):
    """No instrument with this ``instrument_id`` is in the mapper."""

    def __init__(self, instrument_id: str) -> None:
        super().__init__(f"instrument {instrument_id} is not in the mapper")
        self.instrument_id = instrument_id


class ConIdConflict(Exception):
    """An upsert would give a ``con_id`` to a second instrument (``con_id`` is unique)."""

    def __init__(self, instrument_id: str, con_id: int) -> None:
        super().__init__(f"instrument {instrument_id}: con_id {con_id} already belongs to another instrument")
        self.instrument_id = instrument_id
        self.con_id = con_id


def is_connection_error(exc: BaseException) -> bool:
    """PostgreSQL (or the pool) away, a statement timed out: says nothing about the data sent."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def is_data_error(exc: BaseException) -> bool:
    """A value PostgreSQL refuses (a NUL in a text, a constraint broken): the same value fails again."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
