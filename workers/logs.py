"""Structured logging: JSON lines for machines, a readable console format on a terminal."""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, TextIO, cast
from urllib.parse import quote, unquote

import structlog

from workers.repeated_logs import RepeatThrottle

_SECRET_KEY = re.compile(r"password|secret|token|dsn|database_url|sasl", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)
MASK = "**********"
# The user info of a URL, up to the last "@" of the authority, and (for a password holding "/" or "?",
# which a URL parser would take for the path) up to the first "@".
_URL_USERINFO = (re.compile(r"://([^/?#\s]*)@"), re.compile(r"://([^@\s]*)@"))
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


class SecretMask:
    """The secret values of this process, masked wherever text leaves it (log lines, printed errors).

    Masking by key (``redact_secrets``) misses a secret quoted inside an error message: libpq, for one,
    echoes a password it cannot parse. So the values themselves are masked, as written, as a URL decodes
    them, and as JSON and ``repr`` escape them.
    """

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        """Mask each of ``secrets`` and the passwords inside it (a URL's, a keyword ``password=``)."""
        found = set(self._values)
        for secret in secrets:
            for value in (secret, *_embedded_passwords(secret)):
                found.update(_spellings(value))
        found.discard("")
        # Longest first, so a secret that contains another is masked whole.
        self._values = tuple(sorted(found, key=lambda value: (-len(value), value)))

    def clear(self) -> None:
        """Forget every secret (for tests)."""
        self._values = ()

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text


def _embedded_passwords(secret: str) -> set[str]:
    found: set[str] = set()
    for pattern in _URL_USERINFO:
        for match in pattern.finditer(secret):
            _, colon, password = match.group(1).partition(":")
            if colon:
                found.add(password)
    for match in _KEYWORD_PASSWORD.finditer(secret):
        password = match.group(1)
        found.add(password)
        if password.startswith("'"):
            found.add(password[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
    return found


def _spellings(value: str) -> set[str]:
    """``value`` as written, URL-decoded and -encoded, each as JSON and ``repr`` escape it, once and twice."""
    found = {value, unquote(value), quote(value, safe="")}
    for _ in range(2):  # a repr inside a JSON log line is escaped twice
        found |= {jsonlib.dumps(v)[1:-1] for v in found} | {repr(v)[1:-1] for v in found}
    return found


_secret_mask = SecretMask()


def register_secrets(values: Iterable[str]) -> None:
    """Mask ``values`` (and the passwords inside them) in every log line and every masked output."""
    _secret_mask.add(values)


def forget_secrets() -> None:
    """Mask nothing any more (for tests)."""
    _secret_mask.clear()


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret value replaced by ``**********``."""
    return _secret_mask(text)


def _mask_rendered(_: Any, __: str, rendered: Any) -> str:
    """The last step of every log line: whatever a message or traceback quoted, no secret leaves."""
    return _secret_mask(str(rendered))


class _MaskedStream:
    """A text stream that masks the registered secrets in everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_secret_mask(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """Mask the registered secrets in everything printed to stdout and stderr meanwhile (tracebacks too)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = cast(TextIO, _MaskedStream(out)), cast(TextIO, _MaskedStream(err))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


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
            _mask_rendered,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    # A broker away makes aiokafka log each retry (many a second): one line per kind every 10 s.
    handler.addFilter(RepeatThrottle(("aiokafka",), interval=10.0))
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
