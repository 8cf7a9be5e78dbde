"""The one shape the Kafka adapter depends on, whichever wire format is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class EventCodec(Protocol):
    """Turns event records (plain dicts) into Kafka values and back.

    Implemented by :class:`AvroCodec` (single-object encoding) and :class:`RegistryCodec` (Confluent
    framing, when ``SCHEMA_REGISTRY_URL`` is set).
    """

    async def serialize(self, topic: str, record: str, value: Mapping[str, Any]) -> bytes:
        """Encode ``value`` as ``record`` for ``topic``; raises ``EncodeError``."""
        ...

    async def deserialize(self, topic: str, data: bytes | None, expected: str) -> dict[str, Any]:
        """Decode a value of ``topic`` holding an ``expected`` record; raises ``DecodeError``."""
        ...
