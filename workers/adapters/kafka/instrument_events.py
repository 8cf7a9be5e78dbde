"""``instruments.updated`` records (``prometheus.execution.InstrumentUpdated``) for mapper changes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import INSTRUMENT_UPDATED, d8
from workers.adapters.postgres.rows import InstrumentChange, InstrumentUpsert
from workers.ports.outbox import OutboxMessage


def last_trade_day(last_trade_date: str | None) -> date | None:
    """The last trading day of IBKR's ``YYYYMMDD[ time]`` text; None when it has no day (or no date)."""
    if not last_trade_date:
        return None
    digits = last_trade_date.split(" ")[0].split("-")[0]
    if len(digits) < 8 or not digits[:8].isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def instrument_updated_record(outcome: InstrumentUpsert) -> dict[str, Any]:
    """The record announcing ``outcome`` (CREATED, UPDATED or DEACTIVATED) of one mapper row."""
    if outcome.change is InstrumentChange.UNCHANGED:
        raise ValueError("an unchanged instrument is not announced")
    row = outcome.row
    return {
        "instrument_id": row.instrument_id,
        "con_id": row.con_id,
        "symbol": row.symbol,
        "sec_type": row.sec_type,
        "exchange": row.exchange,
        "primary_exchange": row.primary_exchange,
        "currency": row.currency,
        "local_symbol": row.local_symbol,
        "trading_class": row.trading_class,
        "multiplier": d8(row.multiplier if row.multiplier else Decimal(1)),
        "min_tick": d8(row.min_tick),
        "last_trade_date": last_trade_day(row.last_trade_date),
        "active": row.active,
        "change": outcome.change.value,
        "updated_at": row.updated_at,
        "long_name": row.long_name or None,
        "changed_fields": list(outcome.changed_fields),
    }


class InstrumentEventEncoder:
    """Turns a mapper change into the outbox message for ``instruments.updated`` (key ``instrument_id``)."""

    def __init__(self, codec: AvroCodec, topic: str) -> None:
        self.codec = codec
        self.topic = topic

    def __call__(self, outcome: InstrumentUpsert) -> OutboxMessage:
        payload = self.codec.encode(INSTRUMENT_UPDATED, instrument_updated_record(outcome))
        return OutboxMessage(topic=self.topic, key=outcome.row.instrument_id, payload=payload)
