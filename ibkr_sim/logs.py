"""The sim's structured logs: one JSON object per line on stderr (readable text on a terminal).

Modules log through :func:`get_logger`. Only the sim's own process calls :func:`configure_logging`; a
process that embeds the sim (a test, the workers' demo) keeps its own configuration, and the sim's
events go through it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# The sim's events carry this, so they stand apart in logs shared with the workers' processes.
COMPONENT = "sim-gateway"


def _component(_: Any, __: str, event: Any) -> Any:
    event.setdefault("component", COMPONENT)
    return event


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Send the sim's events, and anything logged with ``logging`` (asyncio's errors), to stderr.

    ``json=None`` writes JSON unless stderr is a terminal.
    """
    as_json = not sys.stderr.isatty() if json is None else json
    enrich: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _component,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *enrich,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    render: Any = structlog.processors.JSONRenderer(default=str) if as_json else structlog.dev.ConsoleRenderer(
        colors=False
    )
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=enrich,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                render,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [stream]
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The logger of one sim module (``get_logger(__name__)``)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
