"""The outbox message: an encoded Kafka record written in the same transaction as the change it announces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutboxMessage:
    """An encoded Kafka record to publish once the transaction that wrote it has committed."""

    topic: str
    key: str
    payload: bytes
    # The worker that wrote it (e.g. ``order-consumer:7``); its relay publishes only its own records.
    writer: str | None = None
