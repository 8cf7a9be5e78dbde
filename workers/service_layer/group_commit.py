"""Group commit: many producers hand items over, one task commits them in batches.

A producer's :meth:`GroupCommitter.submit` returns as soon as the item is queued (it waits only while
``max_pending`` items are queued already), so producers keep working while a batch commits, and the next
batch is everything that queued up meanwhile (at most ``max_batch``). When the commit function fails the
committer stops: the failure is raised to every later ``submit`` and to :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class CommitterStopped(RuntimeError):
    """The committer stopped before taking the item (closed, or cancelled)."""


class GroupCommitter(Generic[_T]):
    """Commits submitted items in batches with ``commit``, one batch at a time, in submission order."""

    def __init__(
        self,
        commit: Callable[[list[_T]], Awaitable[None]],
        *,
        max_batch: int = 256,
        max_pending: int = 1024,
        name: str = "group-commit",
    ) -> None:
        if max_batch < 1 or max_pending < max_batch:
            raise ValueError("need 1 <= max_batch <= max_pending")
        self._commit = commit
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queued: list[_T] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self.batches = 0
        self.items = 0
        self._task = asyncio.create_task(self._run(), name=name)

    async def submit(self, item: _T) -> None:
        """Queue ``item`` for the next batch; raises the commit's failure if the committer has stopped."""
        while len(self._queued) >= self._max_pending:
            self._raise_if_stopped()
            self._room.clear()
            room = asyncio.ensure_future(self._room.wait())
            try:
                await asyncio.wait({room, self._task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
        self._raise_if_stopped()
        if self._closing:
            raise CommitterStopped("the committer is closing")
        self._queued.append(item)
        self._arrived.set()

    async def close(self) -> None:
        """Commit everything queued, then stop; raises the commit's failure, if there was one."""
        self._closing = True
        self._arrived.set()
        await self._task

    def cancel(self) -> None:
        """Stop now; what is queued is not committed."""
        self._task.cancel()

    async def wait_cancelled(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    def _raise_if_stopped(self) -> None:
        if not self._task.done():
            return
        if self._task.cancelled():
            raise CommitterStopped("the committer was cancelled")
        failure = self._task.exception()
        if failure is not None:
            raise failure
        raise CommitterStopped("the committer has stopped")

    async def _run(self) -> None:
        while True:
            if not self._queued:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = self._queued[: self._max_batch]
            del self._queued[: self._max_batch]
            self._room.set()
            await self._commit(batch)
            self.batches += 1
            self.items += len(batch)
