"""TWS API framing: 4-byte big-endian length prefix, NUL-terminated fields; field parsing helpers.

Clients differ in how they write unset values and numbers: ib_insync sends an unset double as ``''``,
IB's ``ibapi`` as ``1.7976931348623157e+308``; quantities come as ``100`` or ``100.0``. The helpers here
accept every form.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

HANDSHAKE_PREFIX = b"API\0"
# Far above any real request (placeOrder is < 2 KiB); a larger length means a broken peer.
MAX_FRAME_LENGTH = 1 << 20
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1

_LENGTH = struct.Struct(">I")


class FrameTooLarge(Exception):
    """A frame announced a length above :data:`MAX_FRAME_LENGTH`; the stream cannot be resynchronised."""


def encode_frame(fields: Iterable[str]) -> bytes:
    """Encode fields as one length-prefixed frame."""
    body = ("\0".join(fields) + "\0").encode()
    return _LENGTH.pack(len(body)) + body


def encode_body(body: str) -> bytes:
    """Encode an already NUL-joined body (ending with NUL) as a frame."""
    raw = body.encode()
    return _LENGTH.pack(len(raw)) + raw


class FrameReader:
    """Incremental frame decoder: feed bytes, get complete frames as lists of fields."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[str]]:
        """Add received bytes; return every frame now complete (fields without the trailing empty one)."""
        buffer = self._buffer
        buffer += data
        frames: list[list[str]] = []
        start = 0
        end_of_data = len(buffer)
        while end_of_data - start >= 4:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_FRAME_LENGTH:
                raise FrameTooLarge(f"frame length {length} exceeds {MAX_FRAME_LENGTH}")
            end = start + 4 + length
            if end > end_of_data:
                break
            text = buffer[start + 4 : end].decode("utf-8", errors="replace")
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            frames.append(fields)
            start = end
        if start:
            del buffer[:start]
        return frames

    @property
    def pending(self) -> int:
        """Number of buffered bytes not yet returned as frames."""
        return len(self._buffer)


class FieldError(ValueError):
    """A request field could not be parsed; the message names the field."""


def parse_int(value: str, default: int = 0) -> int:
    """Parse an integer field: ``''`` → default; accepts ``'5'``, ``'5.0'``, the unset markers."""
    if not value:
        return default
    try:
        number_int = int(value)
    except ValueError:
        pass
    else:
        return default if number_int == UNSET_INTEGER else number_int
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"not an integer: {value!r}") from None
    if number >= UNSET_INTEGER or math.isnan(number):
        return default
    if not number.is_integer():
        raise FieldError(f"not an integer: {value!r}")
    return int(number)


def parse_float(value: str) -> float | None:
    """Parse a double field: ``''`` and IB's unset marker → ``None``."""
    if not value or value == "Infinite":
        return None
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"not a number: {value!r}") from None
    if number >= UNSET_DOUBLE or math.isnan(number):
        return None
    return number


def parse_decimal_qty(value: str) -> float:
    """Parse a quantity (``'100'``, ``'100.0'``, ``'1e2'``); unset → 0."""
    number = parse_float(value)
    return 0.0 if number is None else number


def parse_bool(value: str) -> bool:
    """Parse a boolean field: ``'1'``/``'true'`` → True; ``''``/``'0'`` → False."""
    if not value:
        return False
    lowered = value.lower()
    if lowered in ("1", "true", "1.0"):
        return True
    if lowered in ("0", "false", "0.0"):
        return False
    raise FieldError(f"not a boolean: {value!r}")


def parse_version_range(text: str) -> tuple[int, int] | None:
    """Parse the client's ``v<min>..<max>`` (or ``v<n>``) offer; ``None`` if malformed."""
    offer = text.split(" ", 1)[0]
    if not offer.startswith("v"):
        return None
    low, sep, high = offer[1:].partition("..")
    try:
        low_version = int(low)
        high_version = int(high) if sep else low_version
    except ValueError:
        return None
    if low_version > high_version or low_version <= 0:
        return None
    return low_version, high_version


def fmt_float(value: float | None) -> str:
    """Format a double: its shortest exact form (callers round computed values), unset → ``''``."""
    if value is None:
        return ""
    return repr(value)


def fmt_qty(value: float) -> str:
    """Format a quantity: integral values without a decimal point (``'100'``)."""
    if value % 1 == 0:
        return str(int(value))
    return repr(round(value, 10))

