"""Outbound pacing: keep one TWS connection under IB's message-rate limit.

IB allows about 50 messages per second per client and answers a violation with error 100 (and, repeated,
a disconnect). Every request the workers send goes through one :class:`PacingLimiter` per connection.
Waiters are served by priority, then first come first served, so a cancel overtakes queued placements.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import time
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    """Lower goes first."""

    CANCEL = 0
    PLACE = 1
    QUERY = 2


@dataclass(order=True)
class _Waiter:
    priority: int
    sequence: int
    future: asyncio.Future[None] = field(compare=False)


class PacingLimiter:
    """A token bucket of ``rate`` messages per second, ``burst`` at most, with priority waiters."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._waiters: list[_Waiter] = []
        self._sequence = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self.waits = 0
        self.waited_seconds = 0.0

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, priority: Priority = Priority.QUERY) -> None:
        """Wait until one message may be sent."""
        self._refill()
        if not self._waiters and self._tokens >= 1:
            self._tokens -= 1
            return
        started = time.monotonic()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, _Waiter(int(priority), next(self._sequence), future))
        self._schedule()
        try:
            await future
        finally:
            self.waits += 1
            self.waited_seconds += time.monotonic() - started

    def charge(self, messages: int) -> None:
        """Count ``messages`` sent without :meth:`acquire` (ib_insync's own requests at connect) against
        the budget: the bucket may go into debt, and waiters wait until it is paid back."""
        if messages <= 0:
            return
        self._refill()
        self._tokens -= messages
        if self._waiters and self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
            self._schedule()

    def _schedule(self) -> None:
        if self._wakeup is not None:
            return
        self._refill()
        delay = max(0.0, (1 - self._tokens) / self.rate)
        self._wakeup = asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        self._wakeup = None
        self._refill()
        while self._waiters and self._tokens >= 1:
            waiter = heapq.heappop(self._waiters)
            if waiter.future.done():  # cancelled while waiting
                continue
            self._tokens -= 1
            waiter.future.set_result(None)
        while self._waiters and self._waiters[0].future.done():
            heapq.heappop(self._waiters)
        if self._waiters:
            self._schedule()
