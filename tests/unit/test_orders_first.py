"""Orders first: background work waits while order batches are in progress, and never longer than its bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from workers.service_layer.orders_first import OrdersFirst


@contextlib.asynccontextmanager
async def an_order_batch_in_progress(orders_first: OrdersFirst) -> AsyncIterator[None]:
    """An order batch that stays in progress until the ``async with`` block ends."""
    released = asyncio.Event()

    async def endless_orders() -> None:
        with orders_first.order_batch():
            await released.wait()

    orders = asyncio.create_task(endless_orders())
    await asyncio.sleep(0)  # the batch has started
    try:
        yield
    finally:
        released.set()
        await orders


async def test_a_turn_with_no_order_batch_in_progress_is_taken_at_once() -> None:
    orders_first = OrdersFirst(max_wait=10.0)

    await asyncio.wait_for(orders_first.turn(), 0.5)  # would time out if it waited for max_wait


async def test_background_work_goes_after_every_order_batch_in_progress() -> None:
    orders_first = OrdersFirst(max_wait=10.0)
    happened: list[str] = []

    async def order_batch(name: str, seconds: float) -> None:
        with orders_first.order_batch():
            await asyncio.sleep(seconds)
            happened.append(name)

    async def report_batch() -> None:
        await asyncio.sleep(0)  # the order batches have started
        await orders_first.turn()
        happened.append("reports")

    await asyncio.wait_for(asyncio.gather(order_batch("orders 1", 0.05), order_batch("orders 2", 0.02),
                                          report_batch()), 5)

    assert happened == ["orders 2", "orders 1", "reports"]


async def test_a_steady_stream_of_orders_holds_background_work_back_for_max_wait_at_most() -> None:
    orders_first = OrdersFirst(max_wait=0.05)
    loop = asyncio.get_running_loop()
    async with an_order_batch_in_progress(orders_first):
        started = loop.time()
        await asyncio.wait_for(orders_first.turn(), 5)
        waited = loop.time() - started

    assert 0.04 <= waited < 1.0


async def test_a_batch_that_fails_still_ends_its_turn() -> None:
    orders_first = OrdersFirst(max_wait=10.0)

    async def failing_batch() -> None:
        with orders_first.order_batch():
            raise RuntimeError("the ledger is away")

    results = await asyncio.gather(failing_batch(), return_exceptions=True)

    assert isinstance(results[0], RuntimeError)
    await asyncio.wait_for(orders_first.turn(), 0.5)


async def test_no_bound_means_no_waiting() -> None:
    orders_first = OrdersFirst(max_wait=0.0)
    async with an_order_batch_in_progress(orders_first):
        await asyncio.wait_for(orders_first.turn(), 0.5)
