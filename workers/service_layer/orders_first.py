"""Orders first: background work steps aside while a batch of orders is on its way to IBKR.

The worker has one event loop. IBKR's reports about orders already placed, and the relays publishing
statuses and fills, can wait a few milliseconds; an order on its way to placeOrder should not wait for
them. Background work calls :meth:`OrdersFirst.turn` before each batch: it returns at once when no order
batch is in progress, else when the batches in progress are done, or after ``max_wait`` seconds at most
(so a steady stream of orders cannot hold reports back for longer than that).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class OrdersFirst:
    """Counts order batches in progress; lets background work wait (boundedly) until there are none."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self._in_progress = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def order_batch(self) -> Iterator[None]:
        """Marks an order batch in progress for the duration of the ``with`` block."""
        self._in_progress += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_progress -= 1
            if not self._in_progress:
                self._idle.set()

    async def turn(self) -> None:
        """Wait until no order batch is in progress, or ``max_wait`` seconds at most."""
        if self._in_progress and self.max_wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.max_wait)
