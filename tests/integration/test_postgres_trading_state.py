"""The trading state in a real PostgreSQL: one row for the deployment, its history, and the cancels of a halt."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.trading_state import PostgresTradingStateStore
from workers.domain.trading_state import TradingState, TradingStateRecord
from workers.service_layer.trading_state import TradingStateWatch

pytestmark = pytest.mark.integration

RAW_INSERT = """
INSERT INTO orders (order_id, account, instrument_id, side, quantity, order_type, time_in_force,
                    created_at, state, remaining_quantity, owner_client_id)
VALUES (%s, 'DU000001', 'AAPL', 'BUY', 1, 'MARKET', 'DAY', now(), %s, 1, %s)
"""


async def insert_order(pool: Pool, state: str, owner: int) -> str:
    order_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await conn.execute(RAW_INSERT, (order_id, state, owner))
    return order_id


async def pending_cancels(pool: Pool) -> set[str]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT order_id FROM cancel_requests WHERE handled_at IS NULL")
        return {row[0] for row in await cursor.fetchall()}


async def test_a_fresh_deployment_is_active(pool: Pool) -> None:
    current = await PostgresTradingStateStore(pool).current()
    assert current.state is TradingState.ACTIVE
    assert current.changed_by == "migrate"


async def test_each_change_is_recorded_with_who_when_and_why(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    reduced = await store.change(TradingState.REDUCING, reason="risk review", changed_by="alice")
    halted = await store.change(TradingState.HALTED, reason="venue outage", changed_by="bob")
    assert (reduced.previous, halted.previous) == (TradingState.ACTIVE, TradingState.REDUCING)
    assert halted.current.version == reduced.current.version + 1
    assert halted.halts and not reduced.halts
    history = await store.history()
    assert [(r.state, r.changed_by, r.reason) for r in history] == [
        (TradingState.HALTED, "bob", "venue outage"), (TradingState.REDUCING, "alice", "risk review")]
    assert history[0].changed_at >= history[1].changed_at
    assert (await store.current()).state is TradingState.HALTED


async def test_halting_asks_for_a_cancel_of_every_open_order_of_the_deployment_and_no_other(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    open_orders = {await insert_order(pool, "SUBMITTED", owner=7), await insert_order(pool, "ACCEPTED", owner=8),
                   await insert_order(pool, "PARTIALLY_FILLED", owner=7)}
    final = {await insert_order(pool, "FILLED", owner=7), await insert_order(pool, "CANCELLED", owner=8)}

    reduced = await store.change(TradingState.REDUCING, reason="first", changed_by="t")
    assert reduced.cancels_requested == 0 and await pending_cancels(pool) == set()
    halted = await store.change(TradingState.HALTED, reason="stop now", changed_by="t")

    assert halted.cancels_requested == 3
    assert await pending_cancels(pool) == open_orders
    assert not final & await pending_cancels(pool)
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT DISTINCT reason FROM cancel_requests")
        assert [row[0] for row in await cursor.fetchall()] == ["HALTED: stop now"]


async def test_concurrent_changes_are_written_one_after_the_other(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    states = [TradingState.HALTED, TradingState.REDUCING, TradingState.ACTIVE] * 3
    changes = await asyncio.gather(*(store.change(s, reason=f"n{n}", changed_by="t") for n, s in enumerate(states)))
    versions = sorted(c.current.version for c in changes)
    assert versions == list(range(versions[0], versions[0] + len(states)))
    by_version = sorted(changes, key=lambda c: c.current.version)
    # Each change left the state the one before it set: none was written over a stale read.
    for before, after in itertools.pairwise(by_version):
        assert after.previous is before.current.state


async def test_a_watch_follows_a_change_made_elsewhere_and_never_loosens_at_start(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    await store.change(TradingState.HALTED, reason="incident", changed_by="ops")
    seen: list[tuple[TradingState, TradingState]] = []
    reducing = asyncio.Event()

    def followed(record: TradingStateRecord, previous: TradingState) -> None:
        seen.append((previous, record.state))
        if record.state is TradingState.REDUCING:
            reducing.set()

    watch = TradingStateWatch(store, every=0.05, on_change=followed)
    await watch.start(configured=TradingState.ACTIVE, kill_switch=False, instance="replica-a")
    assert watch.state is TradingState.HALTED
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    try:
        await store.change(TradingState.REDUCING, reason="partial resume", changed_by="ops")
        await asyncio.wait_for(reducing.wait(), 2)
        assert watch.state is TradingState.REDUCING
    finally:
        stop.set()
        await task
    assert seen == [(TradingState.HALTED, TradingState.HALTED), (TradingState.HALTED, TradingState.REDUCING)]


async def test_kill_switch_at_start_halts_the_whole_deployment_and_says_so(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    watch = TradingStateWatch(store)
    await watch.start(configured=None, kill_switch=True, instance="order-consumer:abc (client id 7)")
    current = await store.current()
    assert current.state is TradingState.HALTED
    assert current.changed_by == "order-consumer:abc (client id 7)"
    assert current.reason == "KILL_SWITCH=true at the start of order-consumer:abc (client id 7)"


async def test_a_watch_that_never_read_the_state_is_halted() -> None:
    class Unreachable:
        async def current(self) -> None:
            raise OSError("down")

    watch = TradingStateWatch(Unreachable())  # type: ignore[arg-type]  # only current() is called
    assert watch.state is TradingState.HALTED
    with pytest.raises(OSError):
        await watch.refresh()
    assert watch.state is TradingState.HALTED


async def test_a_worker_following_a_halt_asks_cancels_only_for_its_own_open_orders(pool: Pool) -> None:
    store = PostgresTradingStateStore(pool)
    await store.change(TradingState.HALTED, reason="incident", changed_by="ops")
    # Sent by worker 7 after the halt committed, before it saw the halt: no cancel request yet.
    late = await insert_order(pool, "SUBMITTED", owner=7)
    others = await insert_order(pool, "SUBMITTED", owner=8)
    await insert_order(pool, "FILLED", owner=7)

    assert await store.request_cancels(7, "HALTED: incident") == 1
    assert await store.request_cancels(7, "HALTED: incident") == 0
    assert await pending_cancels(pool) == {late}
    assert others not in await pending_cancels(pool)
