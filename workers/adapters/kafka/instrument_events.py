"""``instruments.updated`` records (``prometheus.execution.InstrumentUpdated``) for mapper changes."""

from __future__ import annotations

from datetime import date
from typing import Any

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import INSTRUMENT_UPDATED, d8
from workers.ports.instruments import InstrumentChange, InstrumentUpsert
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
    instrument = outcome.row.instrument
    return {
        "instrument_id": instrument.instrument_id,
        "con_id": instrument.con_id,
        "symbol": instrument.symbol,
        "sec_type": instrument.sec_type,
        "exchange": instrument.exchange,
        "primary_exchange": instrument.primary_exchange,
        "currency": instrument.currency,
        "local_symbol": instrument.local_symbol,
        "trading_class": instrument.trading_class,
        "multiplier": d8(instrument.price_multiplier),
        "min_tick": d8(instrument.min_tick),
        "last_trade_date": last_trade_day(instrument.last_trade_date),
        "active": instrument.active,
        "change": outcome.change.value,
        "updated_at": outcome.row.updated_at,
        "long_name": instrument.long_name or None,
        "changed_fields": list(outcome.changed_fields),
    }


class InstrumentEventEncoder:
    """Turns a mapper change into the outbox message for ``instruments.updated`` (key ``instrument_id``)."""

    def __init__(self, codec: AvroCodec, topic: str) -> None:
        self.codec = codec
        self.topic = topic

    def __call__(self, outcome: InstrumentUpsert) -> OutboxMessage:
        payload = self.codec.encode(INSTRUMENT_UPDATED, instrument_updated_record(outcome))
        return OutboxMessage(topic=self.topic, key=outcome.row.instrument.instrument_id, payload=payload)
