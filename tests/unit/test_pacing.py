"""The pacing limiter: rate bound and priority (cancels overtake placements)."""

from __future__ import annotations

import asyncio
import time

from workers.adapters.ibkr.pacing import PacingLimiter, Priority


async def test_rate_is_bounded() -> None:
    limiter = PacingLimiter(rate=200, burst=5)
    started = time.monotonic()
    for _ in range(65):
        await limiter.acquire(Priority.PLACE)
    elapsed = time.monotonic() - started
    # 5 from the burst, 60 more at 200/s need at least 0.3 s.
    assert elapsed >= 0.29
    assert limiter.waits >= 55


async def test_cancels_overtake_queued_placements() -> None:
    limiter = PacingLimiter(rate=100, burst=1)
    await limiter.acquire()  # empty the bucket
    served: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        served.append(name)

    tasks = [asyncio.create_task(take(f"place-{i}", Priority.PLACE)) for i in range(5)]
    await asyncio.sleep(0)  # let the placements queue first
    tasks.append(asyncio.create_task(take("cancel", Priority.CANCEL)))
    await asyncio.gather(*tasks)
    assert served[0] == "cancel"
    assert served[1:] == [f"place-{i}" for i in range(5)]


async def test_a_cancelled_waiter_does_not_consume_a_slot() -> None:
    limiter = PacingLimiter(rate=50, burst=1)
    await limiter.acquire()
    doomed = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    doomed.cancel()
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started < 0.1
    assert doomed.cancelled()


async def test_messages_sent_around_the_limiter_are_paid_back_first() -> None:
    limiter = PacingLimiter(rate=100, burst=5)
    limiter.charge(10)  # e.g. ib_insync's own requests at connect
    started = time.monotonic()
    await limiter.acquire(Priority.PLACE)
    # 5 tokens in the bucket minus 10 sent: 6 more must accrue at 100/s before one may go.
    assert time.monotonic() - started >= 0.055


async def test_a_charge_while_waiting_delays_the_waiters() -> None:
    limiter = PacingLimiter(rate=100, burst=1)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire(Priority.PLACE))
    await asyncio.sleep(0)
    started = time.monotonic()
    limiter.charge(5)
    await waiting
    assert time.monotonic() - started >= 0.045
