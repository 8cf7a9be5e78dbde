"""A library's repeated log line passes once per interval, saying how many were held back."""

from __future__ import annotations

import json
import logging

import pytest

from workers.logs import configure_logging
from workers.repeated_logs import RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_same_template_passes_once_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    throttle = RepeatThrottle(("aiokafka",), interval=10.0, clock=clock)
    template = "Unable connect to node with id %s: %s"

    passed = []
    for step in range(30):  # three seconds of retries every 100 ms, then the interval is over
        clock.now = 100.0 + step * 0.1
        passed.append(throttle.filter(record("aiokafka.client", template, 1, "refused")))
    clock.now = 110.5
    late = record("aiokafka.client", template, 1, "refused")

    assert passed == [True] + [False] * 29
    assert throttle.filter(late)
    assert late.getMessage() == "Unable connect to node with id 1: refused (29 like it in the last 10s not logged)"


def test_other_templates_levels_and_loggers_are_counted_apart() -> None:
    clock = Clock()
    throttle = RepeatThrottle(("aiokafka",), interval=10.0, clock=clock)

    assert throttle.filter(record("aiokafka.client", "Unable to update metadata from %s", [1]))
    assert throttle.filter(record("aiokafka.client", "Unable connect to node with id %s: %s", 1, "x"))
    assert throttle.filter(record("aiokafka.client", "Unable connect to node with id %s: %s", 1, "x",
                                  level=logging.WARNING))
    assert throttle.filter(record("aiokafka.producer.sender", "Unable to update metadata from %s", [1]))
    assert not throttle.filter(record("aiokafka.client", "Unable to update metadata from %s", [2]))


def test_loggers_outside_the_prefixes_are_never_held_back() -> None:
    throttle = RepeatThrottle(("aiokafka",), interval=10.0, clock=Clock())

    assert all(throttle.filter(record("workers.adapters.kafka.consuming", "fetch failed; will retry"))
               for _ in range(50))


def test_the_workers_logging_holds_back_aiokafkas_repeated_errors(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", worker="order-consumer", instance="host-1", json=True)
    for _ in range(200):
        logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "refused")
        logging.getLogger("workers.tests").warning("the workers' own line")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert sum(line["logger"] == "aiokafka.client" for line in lines) == 1
    assert sum(line["logger"] == "workers.tests" for line in lines) == 200
