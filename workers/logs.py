"""Structured logging: JSON lines for machines, a readable console format on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"password|secret|token|dsn|database_url|sasl", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys, and passwords inside URLs, in every log line."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key):
            event[key] = "**********"
        elif isinstance(value, str) and "://" in value:
            event[key] = _URL_PASSWORD.sub(r"\g<head>**********@", value)
    return event


class _Identity:
    """Adds the worker name and instance id to every line, whichever task or library logs it."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in self.fields.items():
            event.setdefault(key, value)
        return event


def configure_logging(level: str = "INFO", *, worker: str | None = None, instance: str | None = None,
                      json: bool | None = None) -> None:
    """Route structlog and the standard ``logging`` module through one renderer on stderr.

    ``json=None`` picks JSON unless stderr is a terminal.
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    identity = {k: v for k, v in (("worker", worker), ("instance", instance)) if v}
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _Identity(identity),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str) if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Below the level, a call stops at the first processor (no time stamp, no redaction, no render).
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # ib_insync logs every message at INFO; keep its chatter out of the workers' logs.
    logging.getLogger("ib_insync").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.contextvars.clear_contextvars()


def instance_id() -> str:
    """This process's instance id: host name and pid (stable in logs, health keys and metrics)."""
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named after the module that logs."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
