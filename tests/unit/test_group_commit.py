"""GroupCommitter (unit): batches of what queued up, in order, bounded, failures raised to producers."""

from __future__ import annotations

import asyncio

import pytest

from workers.service_layer.group_commit import CommitterStopped, GroupCommitter


class Recorder:
    """A commit function that records its batches; each commit waits until ``release`` is set."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_on = fail_on
        self.started = asyncio.Event()

    async def __call__(self, batch: list[int]) -> None:
        self.started.set()
        await self.release.wait()
        if self.fail_on is not None and self.fail_on in batch:
            raise RuntimeError(f"cannot commit {self.fail_on}")
        self.batches.append(list(batch))


async def test_items_queued_during_a_commit_form_the_next_batch_in_order() -> None:
    recorder = Recorder()
    recorder.release.clear()
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=10, max_pending=20)
    await committer.submit(0)
    await recorder.started.wait()  # the first batch [0] is committing
    for item in range(1, 6):
        await committer.submit(item)
    recorder.release.set()
    await committer.close()

    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
    assert (committer.batches, committer.items) == (2, 6)


async def test_a_batch_holds_at_most_max_batch_items() -> None:
    recorder = Recorder()
    recorder.release.clear()
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=3, max_pending=12)
    for item in range(8):
        await committer.submit(item)
    recorder.release.set()
    await committer.close()

    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]


async def test_a_full_queue_blocks_until_the_commit_takes_a_batch() -> None:
    recorder = Recorder()
    recorder.release.clear()
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=1, max_pending=1)
    await committer.submit(0)
    await recorder.started.wait()  # 0 is committing (and waits); the queue is empty
    await committer.submit(1)  # the queue is full now
    blocked = asyncio.create_task(committer.submit(2))
    await asyncio.sleep(0.02)

    assert not blocked.done()
    recorder.release.set()
    await asyncio.wait_for(blocked, 1)
    await committer.close()
    assert recorder.batches == [[0], [1], [2]]


async def test_a_failed_commit_is_raised_to_later_submits_and_to_close() -> None:
    recorder = Recorder(fail_on=1)
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=1, max_pending=4)
    await committer.submit(0)
    await committer.submit(1)
    with pytest.raises(RuntimeError, match="cannot commit 1"):
        for item in range(2, 100):
            await committer.submit(item)
            await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cannot commit 1"):
        await committer.close()
    assert recorder.batches == [[0]]


async def test_a_producer_blocked_on_a_full_queue_gets_the_failure() -> None:
    recorder = Recorder(fail_on=0)
    recorder.release.clear()
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=1, max_pending=1)
    await committer.submit(0)
    await recorder.started.wait()
    await committer.submit(1)
    blocked = asyncio.create_task(committer.submit(2))
    await asyncio.sleep(0.01)
    recorder.release.set()

    with pytest.raises(RuntimeError, match="cannot commit 0"):
        await asyncio.wait_for(blocked, 1)


async def test_nothing_is_taken_after_close_and_cancel_drops_the_queue() -> None:
    recorder = Recorder()
    committer: GroupCommitter[int] = GroupCommitter(recorder, max_batch=4, max_pending=4)
    await committer.submit(0)
    await committer.close()
    with pytest.raises(CommitterStopped):
        await committer.submit(1)

    stuck = Recorder()
    stuck.release.clear()
    cancelled: GroupCommitter[int] = GroupCommitter(stuck, max_batch=4, max_pending=4)
    await cancelled.submit(0)
    await stuck.started.wait()
    cancelled.cancel()
    await cancelled.wait_cancelled()
    with pytest.raises(CommitterStopped):
        await cancelled.submit(1)
    assert recorder.batches == [[0]] and stuck.batches == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        GroupCommitter(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        GroupCommitter(Recorder(), max_batch=8, max_pending=4)
