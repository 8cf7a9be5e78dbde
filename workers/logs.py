"""Structured logging: JSON lines for machines, a readable console format on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: str = "INFO", *, worker: str | None = None, instance: str | None = None,
                      json: bool | None = None) -> None:
    """Route structlog and the standard ``logging`` module through one renderer on stderr.

    ``json=None`` picks JSON unless stderr is a terminal.
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
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
    bound: dict[str, str] = {}
    if worker:
        bound["worker"] = worker
    if instance:
        bound["instance"] = instance
    if bound:
        structlog.contextvars.bind_contextvars(**bound)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named after the module that logs."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
