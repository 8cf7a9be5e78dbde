"""The outbox: Kafka records written with the change they announce, published once it has committed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboxMessage:
    """An encoded Kafka record to publish once the transaction that wrote it has committed."""

    topic: str
    key: str
    payload: bytes
    # The worker that wrote it (e.g. ``order-consumer:7``); its relay publishes only its own records.
    writer: str | None = None


class OutboxWriter(Protocol):
    """Queues records on their own (records that announce no ledger change, such as a loose rejection)."""

    async def add_many(self, messages: Sequence[OutboxMessage]) -> None: ...
