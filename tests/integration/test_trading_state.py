"""The trading state end to end: order-consumers over real Kafka, PostgreSQL and the sim gateway.

One deployment = one ledger (one PostgreSQL schema) and its order-consumer replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ib_insync import IB, Contract, LimitOrder

from tests.integration.harness import AAPL, ACCOUNT, Harness, order, running_harness
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.trading_state import PostgresTradingStateStore
from workers.bootstrap import build_order_consumer
from workers.domain.orders import OrderType, TimeInForce
from workers.domain.trading_state import TradingState
from workers.runtime.order_consumer import OrderConsumerApp
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

TOKEN = "integration-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FOLLOW_WITHIN = 2.5  # seconds: "within a second or two", plus a scheduling margin on a busy machine


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, admin_token=TOKEN) as running:
        yield running


def admin(app: OrderConsumerApp) -> httpx.AsyncClient:
    assert app.probes.admin is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.probes.admin.port}", timeout=5.0)


@contextlib.asynccontextmanager
async def manual_order(harness: Harness, limit: Decimal) -> AsyncIterator[int]:
    """A resting order placed at the gateway by another API client (client id 42), not through the ledger."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", harness.sim_port, clientId=42, timeout=5)
    try:
        trade = ib.placeOrder(Contract(conId=AAPL.con_id, exchange="SMART"),
                              LimitOrder("BUY", 1, float(limit), account=ACCOUNT, tif="GTC"))
        await harness.wait_for(lambda: trade.orderStatus.status == "Submitted", what="the manual order")
        yield trade.order.orderId
    finally:
        ib.disconnect()


def working(harness: Harness, client_id: int, order_id: int) -> bool:
    return any(o.client_id == client_id and o.order_id == order_id for o in harness.sim.open_orders())


async def test_halt_over_http_needs_the_token_rejects_new_orders_and_cancels_only_the_ledgers_open_orders(
        harness: Harness) -> None:
    app = harness.app
    assert app is not None
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    resting = order(order_type=OrderType.LIMIT, limit=str(price - 30), tif=TimeInForce.GTC)
    await harness.send(resting)
    await harness.wait_status(resting.order_id, "SUBMITTED")
    async with manual_order(harness, price - 31) as manual_id:
        async with admin(app) as client:
            refused = await client.post("/kill-switch", content="on")
            wrong = await client.post("/kill-switch", content="on", headers={"Authorization": "Bearer nope"})
            assert (refused.status_code, wrong.status_code) == (401, 401)
            assert app.trading.state is TradingState.ACTIVE
            accepted = await client.post("/kill-switch", content="on", headers=AUTH)
        assert accepted.status_code == 200
        assert accepted.json()["state"] == "HALTED" and accepted.json()["cancels_requested"] == 1

        await harness.wait_status(resting.order_id, "CANCELLED")
        assert working(harness, 42, manual_id), "an order the ledger does not hold must stay working"

    after = order()
    await harness.send(after)
    rejected = await harness.wait_status(after.order_id, "REJECTED")
    assert rejected["reason"].startswith("TRADING_HALTED: trading is HALTED")
    assert harness.sim.place_count(after.order_id) == 0
    await harness.wait_for(lambda: any(h.get("trading_state") == "HALTED" for h in harness.observed.health),
                           what="a workers.health record with trading_state HALTED")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.probes.port}") as client:
        scrape = (await client.get("/metrics")).text
    assert 'ibkr_workers_trading_state{state="HALTED"} 1.0' in scrape
    assert 'ibkr_workers_orders_rejected_total{reason="TRADING_HALTED"} 1.0' in scrape


async def start_replica(harness: Harness, client_id: int, group: str) -> tuple[OrderConsumerApp, asyncio.Task[None]]:
    app = await build_order_consumer(harness.settings(ibkr_client_id=client_id, kafka_consumer_group=group,
                                                      admin_token=TOKEN), codec=harness.codec)
    return app, asyncio.create_task(app.run())


async def stop_replica(app: OrderConsumerApp, task: asyncio.Task[None]) -> None:
    app.stop.set()
    await asyncio.wait_for(task, 15)


async def followed(app: OrderConsumerApp, state: TradingState) -> float:
    """Seconds until ``app`` follows ``state``."""
    started = time.monotonic()
    while app.trading.state is not state:
        if time.monotonic() - started > 10:
            raise AssertionError(f"replica never followed {state} (still {app.trading.state})")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def run_cli(database_url: str, *args: str) -> Any:
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "trading-state", *args,
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_a_state_set_on_one_replica_is_followed_by_another_and_survives_a_restart_of_both(
        harness: Harness, database_url: str) -> None:
    first = harness.app
    assert first is not None
    group = first.settings.kafka_consumer_group
    second, second_task = await start_replica(harness, 8, group)
    try:
        async with admin(first) as client:
            answer = await client.post("/trading-state", headers=AUTH, json={
                "state": "HALTED", "reason": "incident drill", "by": "tester"})
        assert answer.status_code == 200
        assert await followed(second, TradingState.HALTED) < FOLLOW_WITHIN

        await harness.stop_consumer()
        await stop_replica(second, second_task)
        await harness.start_consumer(kafka_consumer_group=group, admin_token=TOKEN)
        second, second_task = await start_replica(harness, 8, group)
        assert harness.app is not None
        assert harness.app.trading.state is TradingState.HALTED  # before either has consumed anything
        assert second.trading.state is TradingState.HALTED

        halted = order()
        await harness.send(halted)
        assert (await harness.wait_status(halted.order_id, "REJECTED"))["reason"].startswith("TRADING_HALTED")

        process = await run_cli(database_url, "resume", "--reason", "drill over", "--by", "tester")
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert "trading state ACTIVE (was HALTED)" in out.decode()
        assert await followed(harness.app, TradingState.ACTIVE) < FOLLOW_WITHIN
        assert await followed(second, TradingState.ACTIVE) < FOLLOW_WITHIN

        resumed = order()
        await harness.send(resumed)
        await harness.wait_status(resumed.order_id, "FILLED")
    finally:
        with contextlib.suppress(Exception):
            await stop_replica(second, second_task)

    pool = await open_pool(database_url)
    try:
        history = await PostgresTradingStateStore(pool).history()
    finally:
        await close_pool(pool)
    assert [(r.state, r.reason) for r in history] == [(TradingState.ACTIVE, "drill over"),
                                                      (TradingState.HALTED, "incident drill")]
    assert history[1].changed_by.startswith("tester (HTTP from 127.0.0.1")
    assert history[0].changed_by == "tester"


async def test_kill_switch_at_start_halts_the_deployment(kafka_bootstrap: str, database_url: str,
                                                         kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, kill_switch=True) as harness:
        assert harness.app is not None and harness.app.trading.state is TradingState.HALTED
        request = order()
        await harness.send(request)
        assert (await harness.wait_status(request.order_id, "REJECTED"))["reason"].startswith("TRADING_HALTED")
