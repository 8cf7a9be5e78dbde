"""The outbox against a real PostgreSQL: records wait until they are marked published."""

from __future__ import annotations

import pytest

from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.ports.outbox import OutboxMessage

pytestmark = pytest.mark.integration


async def test_outbox_records_wait_in_order_until_published(pool: Pool) -> None:
    outbox = Outbox(pool)
    first = await outbox.add(OutboxMessage("orders.status", "order-1", b"\xc3\x01first"))
    second = await outbox.add(OutboxMessage("orders.status", "order-2", b"\xc3\x01second"))

    pending = await outbox.unpublished()
    marked = await outbox.mark_published(first)
    marked_again = await outbox.mark_published(first)
    remaining = await outbox.unpublished()

    assert [(m.id, m.key, m.payload) for m in pending] == [
        (first, "order-1", b"\xc3\x01first"),
        (second, "order-2", b"\xc3\x01second"),
    ]
    assert (marked, marked_again) == (True, False)
    assert [m.id for m in remaining] == [second]
    assert remaining[0].published_at is None
