"""Events are checked for size before they are written to the outbox: one that could never be published
is refused where it is made."""

from __future__ import annotations

from decimal import Decimal

import pytest

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.event_sink import MAX_EVENT_BYTES, AvroEventSink, EventTooLarge
from workers.ports.ibkr import IbPosition
from workers.settings import TopicNames


def test_an_event_larger_than_the_limit_is_refused_before_the_outbox() -> None:
    sink = AvroEventSink(AvroCodec(), TopicNames())
    report = IbPosition(account="DU1234567", con_id=265598, quantity=Decimal(10), avg_cost=Decimal(100),
                        currency="USD")
    assert len(sink.position(report, "STK:AAPL:USD").payload) < 200
    with pytest.raises(EventTooLarge, match=f"position for 'DU1234567' is .* bytes, more than {MAX_EVENT_BYTES}"):
        sink.position(report, "x" * (MAX_EVENT_BYTES + 1))
