"""Logs are JSON lines with the worker's identity, and never carry a secret."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from workers.logs import configure_logging, forget_secrets, get_logger, mask_secrets, masked_output, register_secrets


def test_json_lines_carry_identity_and_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", worker="order-consumer", instance="host-1", json=True)
    secret_fields = {"password": "hunter" + "2"}  # built, so no password literal sits in the repo
    get_logger("tests").info("connected", order_id="o-1", url="postgresql://app:s3cret@db:5432/x",
                             **secret_fields)
    logging.getLogger("some.library").warning("plain stdlib line")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first, second = lines
    assert first["event"] == "connected" and first["order_id"] == "o-1"
    assert first["worker"] == "order-consumer" and first["instance"] == "host-1"
    assert first["level"] == "info" and first["timestamp"].endswith("Z")
    assert first["password"] == "**********"
    assert "s3cret" not in first["url"] and first["url"].endswith("@db:5432/x")
    assert second["logger"] == "some.library" and second["worker"] == "order-consumer"


class Rendered:
    """A log value that counts how often it was turned into text."""

    def __init__(self) -> None:
        self.times = 0

    def __str__(self) -> str:
        self.times += 1
        return "rendered"

    __repr__ = __str__


def test_a_call_below_the_level_costs_no_processing(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", worker="order-consumer", json=True)
    value = Rendered()
    log = get_logger("tests.level")
    log.info("orders recorded", detail=value)
    assert value.times == 0 and capsys.readouterr().err == ""

    log.warning("orders refused", detail=value)
    (line,) = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    assert value.times >= 1 and line["detail"] == "rendered" and line["level"] == "warning"


@pytest.fixture
def secret_url() -> Iterator[str]:
    """A DATABASE_URL whose password libpq would echo, registered with the mask; forgotten afterwards."""
    url = "postgresql://app:" + 'Ab%zz"q\\x' + "@db:5432/orders"  # built, so no password literal sits here
    register_secrets([url])
    yield url
    forget_secrets()


def test_a_secret_quoted_in_a_message_and_a_traceback_is_masked_last(
        capsys: pytest.CaptureFixture[str], secret_url: str) -> None:
    password = secret_url.split(":")[2].split("@", maxsplit=1)[0]
    configure_logging("INFO", worker="migrate", json=True)
    try:
        raise ValueError(f'invalid percent-encoded token: "{password}"')
    except ValueError:
        get_logger("tests").exception("migration failed", detail=f"token {password!r}")
    logging.getLogger("psycopg.pool").warning("error connecting: %s", password)
    text = capsys.readouterr().err
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2 and "**********" in lines[0]["exception"] and "**********" in lines[1]["event"]
    assert "zz" not in text and password not in text and json.dumps(password)[1:-1] not in text


def test_masked_output_masks_what_is_printed(capsys: pytest.CaptureFixture[str], secret_url: str) -> None:
    with masked_output():
        print(f"cannot connect to {secret_url}", file=sys.stderr)
        print(repr(secret_url))
        sys.stderr.writelines(["url: ", secret_url, "\n"])
    captured = capsys.readouterr()
    assert captured.err == "cannot connect to **********\nurl: **********\n"
    assert captured.out == "'**********'\n"


def test_a_password_alone_is_masked_written_and_decoded() -> None:
    secret = f"p@{secrets.token_hex(4)}/w"  # made up here, with the characters a URL escapes
    written = quote(secret, safe="")
    quoted = f"it''s{secrets.token_hex(4)}"  # a libpq value with an escaped quote
    register_secrets([f"postgresql://app:{written}@db/x", f"host=db password='{quoted}' user=app"])
    try:
        assert mask_secrets(f"{written} {secret}") == "********** **********"
        assert quoted not in mask_secrets(f"password='{quoted}'")
        assert mask_secrets("an unrelated line") == "an unrelated line"
    finally:
        forget_secrets()
