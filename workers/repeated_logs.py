"""A logging filter that lets a library's repeated message through once per interval, with a count.

While a broker is away, aiokafka's fetcher, coordinator, sender and metadata updater each retry every
100 ms and log every failed attempt at ERROR: well over a hundred lines a second per worker, which buries
the workers' own lines and fills the log store. The first line of each kind passes at once; the same
kind (logger, level and message template, whatever its arguments) then passes once per interval, saying
how many were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    passed_at: float
    held_back: int = 0


class RepeatThrottle(logging.Filter):
    """Passes a record of loggers under ``prefixes`` once per ``interval`` seconds for each message template."""

    def __init__(self, prefixes: tuple[str, ...], interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(now)
            return True
        if now - seen.passed_at < self.interval:
            seen.held_back += 1
            return False
        if seen.held_back:
            # The template stays a template: its arguments are still applied by the formatter.
            record.msg = f"{record.msg} ({seen.held_back} like it in the last {now - seen.passed_at:.0f}s not logged)"
        self._seen[key] = _Seen(now)
        return True
