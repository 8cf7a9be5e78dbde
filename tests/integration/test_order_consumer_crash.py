"""The order-consumer as a real process: killed with SIGKILL while orders flow, and stopped with SIGTERM.

The sim gateway runs in the test process, so it outlives every worker process, as IB Gateway would.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.integration.harness import Harness, order, running_harness
from tests.integration.worker_process import WorkerProcess
from workers.settings import TopicNames

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = {"FILLED", "CANCELLED", "REJECTED"}


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, in_process=False) as running:
        yield running


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(harness: Harness) -> None:
    rng = random.Random(20261128)
    worker = WorkerProcess(harness, group=f"crash-{os.getpid()}-{rng.randrange(10**6)}")
    try:
        await worker.start()
        requests = [order(quantity=str(rng.randint(1, 5))) for _ in range(500)]

        async def produce() -> None:
            for i, request in enumerate(requests):
                await harness.send(request)
                if i % 10 == 9:
                    await asyncio.sleep(0.05)  # about 200 orders/s

        producing = asyncio.create_task(produce())
        kills = 0
        deadline = time.monotonic() + 120
        while (kills < 6 or not producing.done()) and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            await worker.kill()
            kills += 1
            await worker.start()
        await producing
        assert kills >= 5

        def settled() -> bool:
            return all(harness.observed.last_status(r.order_id) in FINAL for r in requests)

        await harness.wait_for(settled, timeout=180, what="every order in a final status")
        expected_fills = len(harness.sim.executions())
        await harness.wait_for(lambda: sum(len(f) for f in harness.observed.fills.values()) >= expected_fills,
                               timeout=60, what="every execution on fills.executed")
        await asyncio.sleep(1.0)  # anything published twice would show up now
        code, _ = await worker.terminate()
        assert code == 0
    finally:
        await worker.ensure_gone()

    for request in requests:
        assert harness.sim.place_count(request.order_id) == 1, request.order_id
        assert harness.observed.last_status(request.order_id) == "FILLED"
    exec_ids = Counter(f["fill_id"] for fills in harness.observed.fills.values() for f in fills)
    duplicates = [e for e, n in exec_ids.items() if n > 1]
    assert duplicates == []
    assert set(exec_ids) == {e.exec_id for e in harness.sim.executions()}
    for request in requests:
        filled = sum(f["quantity"] for f in harness.observed.fills[request.order_id])
        assert filled == request.quantity, request.order_id


async def test_sigterm_stops_the_worker_cleanly_within_ten_seconds(harness: Harness) -> None:
    worker = WorkerProcess(harness, group=f"term-{os.getpid()}")
    try:
        await worker.start()
        requests = [order() for _ in range(20)]
        for request in requests:
            await harness.send(request)
        for request in requests:
            await harness.wait_status(request.order_id, "FILLED", timeout=60)
        code, took = await worker.terminate()
        assert code == 0
        assert took < 10.0
    finally:
        await worker.ensure_gone()
