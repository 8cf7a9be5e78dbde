"""What a failure says about the record: infrastructure errors are retried, the record's own set it aside."""

from __future__ import annotations

import decimal

import psycopg
import pytest
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError
from psycopg_pool import PoolTimeout

from workers.adapters.avro import EncodeError
from workers.adapters.kafka.failures import ErrorKind, classifier, classify_error, describe
from workers.bootstrap import database_error_kind

CLASSIFY = classifier(database_error_kind)


@pytest.mark.parametrize("error", [
    ConnectionResetError("peer went away"), TimeoutError(), KafkaConnectionError(), RequestTimedOutError(),
    psycopg.OperationalError("server closed the connection unexpectedly"), PoolTimeout("no connection"),
    psycopg.InterfaceError("the connection is closed"),
])
def test_connections_and_timeouts_are_infrastructure(error: BaseException) -> None:
    assert CLASSIFY(error) is ErrorKind.INFRASTRUCTURE


@pytest.mark.parametrize("error", [
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    psycopg.IntegrityError("violates check constraint"), ValueError("bad value"), TypeError("not a str"),
    decimal.InvalidOperation(), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    EncodeError("OrderStatusChanged.reason: expected a str"),
])
def test_values_refused_are_the_records(error: BaseException) -> None:
    assert CLASSIFY(error) is ErrorKind.RECORD


@pytest.mark.parametrize("error", [RuntimeError("?"), KeyError("k"), AssertionError(), psycopg.ProgrammingError()])
def test_anything_else_is_unknown(error: BaseException) -> None:
    assert CLASSIFY(error) is ErrorKind.UNKNOWN
    assert classify_error(error) is ErrorKind.UNKNOWN


def test_an_error_is_described_in_one_bounded_line_with_controls_escaped() -> None:
    text = describe(ValueError("bad\x00value\nsecond line " + "x" * 1000))
    assert text.startswith("ValueError: bad\\x00value second line xxx")
    assert len(text) == 500 and "\n" not in text
