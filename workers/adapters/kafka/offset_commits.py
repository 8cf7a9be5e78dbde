"""A consumer's offsets committed in the background: never backwards, never holding up consumption."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from workers.logs import get_logger

log = get_logger(__name__)


class OffsetCommits:
    """Commits the offsets given to :meth:`later` in the background; :meth:`flush` commits them now.

    One commit is in flight at a time, and commits are at least ``interval`` seconds apart; offsets handled
    meanwhile wait and go together in the next one (the latest offset of each partition). So commits never
    go backwards, a slow group coordinator never stalls consumption, and the broker gets a few commits a
    second rather than one per batch. A crash or a rebalance before a commit completes only redelivers
    records the ledger already holds.
    """

    def __init__(self, consumer: AIOKafkaConsumer, *, interval: float = 0.1) -> None:
        self.consumer = consumer
        self.interval = interval
        self._pending: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = float("-inf")
        self._now = asyncio.Event()  # set while flushing: the interval is not waited for

    def later(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` in the background, without holding up the next batch."""
        for partition, offset in offsets.items():
            self._pending[partition] = max(offset, self._pending.get(partition, 0))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(), name="offset-commit")

    async def flush(self) -> None:
        """Commit every offset given now and wait for it (or for its commit to fail)."""
        self._now.set()
        try:
            if self._pending and (self._committer is None or self._committer.done()):
                self._committer = asyncio.create_task(self._commit_pending(), name="offset-commit")
            if self._committer is not None:
                await self._committer
        finally:
            self._now.clear()

    async def _commit_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            wait = self._last_commit + self.interval - loop.time()
            if wait > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), wait)
            offsets, self._pending = self._pending, {}
            self._last_commit = loop.time()
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance moved the partition, or the coordinator was away: the records come again,
            # and the ledger makes the redelivery harmless.
            log.warning("offset commit failed; the records will be redelivered", partitions=len(offsets),
                        error=str(exc))
