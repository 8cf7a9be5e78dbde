"""The order-consumer as a real process: killed with SIGKILL while orders flow, and stopped with SIGTERM.

The sim gateway runs in the test process, so it outlives every worker process, as IB Gateway would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from tests.integration.harness import AAPL, Harness, order, running_harness
from tests.integration.worker_process import WorkerProcess, free_port
from workers.domain.brackets import STOP_LOSS, TAKE_PROFIT, child_order_id
from workers.domain.modifications import OrderModifyRequested
from workers.domain.orders import OrderType
from workers.settings import TopicNames

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = {"FILLED", "CANCELLED", "REJECTED"}


async def kill_while(worker: WorkerProcess, producing: asyncio.Task[None], rng: random.Random, *,
                     at_least: int, within: float, pause: tuple[float, float], until_produced: bool = True) -> int:
    """SIGKILL ``worker`` and start it again, every ``pause`` seconds (drawn), until it was killed
    ``at_least`` times and (``until_produced``) ``producing`` is done, or ``within`` seconds passed; the
    number of kills. A stream that waits for the worker's answers needs ``until_produced`` off: a worker
    killed before it is up answers nothing."""
    kills = 0
    deadline = time.monotonic() + within
    while ((kills < at_least or (until_produced and not producing.done()))
           and time.monotonic() < deadline):
        await asyncio.sleep(rng.uniform(*pause))
        await worker.kill()
        kills += 1
        await worker.start()
    await producing
    return kills


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

        kills = await kill_while(worker, asyncio.create_task(produce()), rng, at_least=6, within=120,
                                 pause=(0.4, 1.6))
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


async def test_sigkill_while_modifications_flow_applies_each_once_and_settles_every_one(harness: Harness) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261207")))
    worker = WorkerProcess(harness, group=f"crash-modify-{os.getpid()}-{rng.randrange(10**6)}",
                           health_port=free_port())
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    resting = [order(order_type=OrderType.LIMIT, limit=str(price - 10), quantity="3") for _ in range(40)]
    plan: dict[str, list[OrderModifyRequested]] = {}
    try:
        await worker.start()

        async def produce() -> None:
            for request in resting:
                await harness.send(request)
            for request in resting:
                await harness.wait_status(request.order_id, "SUBMITTED", timeout=120)
            for n, request in enumerate(resting):
                plan[request.order_id] = [
                    await harness.modify(request.order_id, limit=str(price - 4)),
                    await harness.modify(request.order_id, quantity="5"),
                    await harness.modify(request.order_id, limit=str(price + 1)),  # marketable: fills
                ]
                if n % 5 == 4:
                    await asyncio.sleep(0.1)

        await kill_while(worker, asyncio.create_task(produce()), rng, at_least=6, within=150, pause=(0.8, 2.0),
                         until_produced=False)

        def settled() -> bool:
            return all(harness.modification_statuses(o, m.modify_id) for o, mods in plan.items() for m in mods)

        await harness.wait_for(settled, timeout=180, what="every modification settled")
        await harness.wait_for(lambda: all(harness.observed.last_status(r.order_id) == "FILLED" for r in resting),
                               timeout=120, what="every order filled")
        await worker.wait_healthy()  # the last start is up: SIGTERM stops it gracefully
        code, _ = await worker.terminate()
        assert code == 0
    finally:
        await worker.ensure_gone()

    assert harness.observed.dead_letters == []
    for request in resting:
        for modification in plan[request.order_id]:
            outcomes = {s["reason"] for s in harness.modification_statuses(request.order_id, modification.modify_id)}
            assert len(outcomes) == 1 and outcomes.pop().startswith("MODIFIED: "), modification
        sent = [r for _, r in harness.sim.orders_seen if r.order_ref == request.order_id]
        # The order, then each applied modification once at most (one may change the ledger only, while
        # the order waited to be placed): never a set of terms sent twice in a row.
        assert 1 <= len(sent) <= 4, request.order_id
        terms = [(r.total_quantity, r.lmt_price) for r in sent]
        assert all(a != b for a, b in itertools.pairwise(terms)), terms
        assert terms[-1] == (5, float(price + 1))
        assert sum(f["quantity"] for f in harness.observed.fills[request.order_id]) == Decimal(5)
    exec_ids = Counter(f["fill_id"] for fills in harness.observed.fills.values() for f in fills)
    assert [e for e, n in exec_ids.items() if n > 1] == []


async def test_sigkill_while_brackets_and_their_modifications_flow_acts_once_on_each_and_completes_every_group(
        harness: Harness) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261208")))
    worker = WorkerProcess(harness, group=f"crash-bracket-{os.getpid()}-{rng.randrange(10**6)}",
                           health_port=free_port())
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    # A market buy whose take-profit rests above the market and whose stop-loss rests far below; once the
    # take-profit works, it is modified to just under the market: it fills, and its fill cancels the stop.
    parents = [replace(order(quantity=str(rng.randint(1, 4))), take_profit_price=price + 5,
                       stop_loss_price=price - 30) for _ in range(40)]
    groups = {p.order_id: [p.order_id, *(child_order_id(p.order_id, leg) for leg in (TAKE_PROFIT, STOP_LOSS))]
              for p in parents}
    modifications: dict[str, OrderModifyRequested] = {}
    try:
        await worker.start()

        async def produce() -> None:
            for n, parent in enumerate(parents):
                await harness.send(parent)
                if n % 5 == 4:
                    await asyncio.sleep(0.1)
            for parent in parents:
                take_profit = groups[parent.order_id][1]
                await harness.wait_status(take_profit, "SUBMITTED", timeout=120)
                modifications[take_profit] = await harness.modify(take_profit, limit=str(price - 1))

        await kill_while(worker, asyncio.create_task(produce()), rng, at_least=6, within=150, pause=(0.8, 2.0),
                         until_produced=False)

        def settled() -> bool:
            return all(harness.observed.last_status(i) in FINAL for ids in groups.values() for i in ids)

        await harness.wait_for(settled, timeout=180, what="every order of every group final")
        await worker.wait_healthy()  # the last start is up: SIGTERM stops it gracefully
        code, _ = await worker.terminate()
        assert code == 0
    finally:
        await worker.ensure_gone()

    for take_profit, modification in modifications.items():
        outcomes = {s["reason"] for s in harness.modification_statuses(take_profit, modification.modify_id)}
        assert len(outcomes) == 1 and outcomes.pop().startswith("MODIFIED: limit_price"), take_profit
    assert harness.observed.dead_letters == []
    for parent in parents:
        parent_id, take_profit, stop_loss = groups[parent.order_id]
        assert [harness.observed.last_status(i) for i in groups[parent.order_id]] == [
            "FILLED", "FILLED", "CANCELLED"], parent_id
        assert harness.sim.place_count(parent_id) == harness.sim.place_count(stop_loss) == 1, parent_id
        assert harness.sim.place_count(take_profit) == 2, take_profit  # placed, then modified once
        bought = sum(f["quantity"] for f in harness.observed.fills[parent_id])
        sold = sum(f["quantity"] for f in harness.observed.fills[take_profit])
        assert bought == sold == parent.quantity
        assert harness.observed.fills[stop_loss] == []
    exec_ids = Counter(f["fill_id"] for fills in harness.observed.fills.values() for f in fills)
    assert [e for e, n in exec_ids.items() if n > 1] == []
