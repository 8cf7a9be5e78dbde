"""Logs are JSON lines with the worker's identity, and never carry a secret."""

from __future__ import annotations

import json
import logging

import pytest

from workers.logs import configure_logging, get_logger


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
