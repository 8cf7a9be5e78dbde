"""The order-consumer's promise across disconnects and restarts: no lost order, no duplicate, no fill twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from tests.integration.harness import Harness, order, running_harness
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

FINAL = {"FILLED", "CANCELLED", "REJECTED"}


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


def assert_exactly_once(harness: Harness, order_ids: list[str]) -> None:
    for order_id in order_ids:
        assert harness.sim.place_count(order_id) == 1, order_id
    exec_ids = Counter(f["fill_id"] for fills in harness.observed.fills.values() for f in fills)
    assert exec_ids, "no fills were published"
    assert max(exec_ids.values()) == 1, [e for e, n in exec_ids.items() if n > 1]
    sim_exec_ids = {e.exec_id for e in harness.sim.executions()}
    assert set(exec_ids) == sim_exec_ids


async def test_gateway_dropped_mid_stream_loses_and_duplicates_nothing(harness: Harness) -> None:
    requests = [order(quantity="1") for _ in range(60)]
    for i, request in enumerate(requests):
        await harness.send(request)
        if i in (20, 40):
            await harness.wait_for(lambda: 7 in harness.sim.connected_client_ids, what="a connection")
            await asyncio.sleep(0.05)
            assert harness.sim.drop_connections() >= 1
    for request in requests:
        await harness.wait_status(request.order_id, "FILLED", timeout=40)
    await harness.wait_for(lambda: sum(len(f) for f in harness.observed.fills.values()) >= len(requests),
                           timeout=20, what="one fill per order")
    assert_exactly_once(harness, [r.order_id for r in requests])
    assert harness.app is not None and harness.app.gateway.reconnects >= 3
    assert harness.app.service.unanswered == 0


async def test_gateway_restart_with_refused_connections_then_reconciles(harness: Harness) -> None:
    first = [order(quantity="1") for _ in range(10)]
    for request in first:
        await harness.send(request)
    harness.sim.refuse_connections(1.5)
    second = [order(quantity="1") for _ in range(10)]
    for request in second:
        await harness.send(request)
    for request in first + second:
        await harness.wait_status(request.order_id, "FILLED", timeout=40)
    await harness.wait_for(lambda: sum(len(f) for f in harness.observed.fills.values()) >= 20,
                           timeout=20, what="one fill per order")
    assert_exactly_once(harness, [r.order_id for r in first + second])


async def test_lower_next_valid_id_after_restart_never_reuses_an_order_id(harness: Harness) -> None:
    before = [order(quantity="1") for _ in range(5)]
    for request in before:
        await harness.send(request)
    for request in before:
        await harness.wait_status(request.order_id, "FILLED")
    used = {s["ib_order_id"] for r in before for s in harness.observed.statuses[r.order_id]
            if s["ib_order_id"] is not None}
    harness.sim.lower_next_valid_id(1)
    harness.sim.drop_connections()
    after = [order(quantity="1") for _ in range(5)]
    for request in after:
        await harness.send(request)
    for request in after:
        filled = await harness.wait_status(request.order_id, "FILLED", timeout=30)
        assert filled["ib_order_id"] not in used
        assert filled["ib_order_id"] > max(used)


async def test_nothing_is_consumed_while_ibkr_is_down_and_all_fills_after(harness: Harness) -> None:
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled, what="ready")
    harness.sim.refuse_connections(2.5)
    await harness.wait_for(lambda: harness.app is not None and harness.app.loop.gate_closed, what="paused")
    consumed_before = harness.app.loop.consumed
    requests = [order(quantity="1") for _ in range(5)]
    for request in requests:
        await harness.send(request)
    await asyncio.sleep(0.5)
    assert harness.app.loop.consumed == consumed_before  # paused: nothing taken that cannot be placed
    assert all(harness.observed.last_status(r.order_id) is None for r in requests)
    for request in requests:
        await harness.wait_status(request.order_id, "FILLED", timeout=30)
    await harness.wait_for(lambda: sum(len(f) for f in harness.observed.fills.values()) >= 5,
                           timeout=20, what="one fill per order")
    assert_exactly_once(harness, [r.order_id for r in requests])


async def test_heartbeat_detects_a_frozen_gateway_and_reconnects(kafka_bootstrap: str, database_url: str,
                                                                 kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, ibkr_heartbeat_interval=0.3,
                               ibkr_heartbeat_timeout=0.5) as h:
        assert h.app is not None
        await h.wait_for(lambda: h.app is not None and h.app.service.reconciled, what="ready")
        await h.wait_for(lambda: h.app is not None and h.app.gateway.rtt_ms is not None, what="a heartbeat rtt")
        reconnects = h.app.gateway.reconnects
        h.sim.freeze()
        await h.wait_for(lambda: h.app is not None and h.app.gateway.heartbeat_failures >= 1, timeout=5,
                         what="a missed heartbeat")
        h.sim.unfreeze()
        await h.wait_for(lambda: h.app is not None and h.app.gateway.reconnects > reconnects, timeout=15,
                         what="the reconnect")
        request = order()
        await h.send(request)
        await h.wait_status(request.order_id, "FILLED", timeout=30)


async def test_paper_worker_refuses_to_trade_against_a_live_account(kafka_bootstrap: str, database_url: str,
                                                                   kafka_topics: TopicNames) -> None:
    from ibkr_sim.config import SimConfig
    from ibkr_sim.server import SimGateway

    harness = Harness(kafka_bootstrap, database_url, kafka_topics)
    harness.sim = SimGateway(SimConfig(pacing=False, accounts=("U0000009",)))
    try:
        await harness.start(ibkr_accounts="U0000009")
        assert harness.app is not None
        await harness.wait_for(lambda: harness.app is not None and harness.app.gateway.last_error is not None
                               and "non-paper" in harness.app.gateway.last_error, what="the refusal")
        request = order(account="U0000009")
        await harness.send(request)
        await asyncio.sleep(1.0)
        assert harness.sim.place_count(request.order_id) == 0
        assert not harness.app.service.reconciled
        assert harness.observed.last_status(request.order_id) is None  # not even consumed
    finally:
        await harness.stop()


async def test_orders_ib_drops_over_its_pacing_limit_are_placed_again_exactly_once(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    # The worker's limiter far above IB's limit: IB drops placeOrders with error 100, naming none.
    h = Harness(kafka_bootstrap, database_url, kafka_topics)
    h.sim.config.pacing = True
    h.sim.config.max_messages_per_second = 25
    try:
        await h.start(ibkr_pacing_per_second=1000, ibkr_order_answer_timeout=1.0)
        assert h.app is not None
        await h.wait_for(lambda: h.app is not None and h.app.service.reconciled, what="ready")
        requests = [order() for _ in range(60)]
        for request in requests:
            await h.send(request)
        for request in requests:
            await h.wait_status(request.order_id, "FILLED", timeout=60)
        assert h.sim.pacing_violations > 0, "IB dropped nothing: the test proves nothing"
        # Fills have a relay of their own: a FILLED status can be on its topic before the fill is on its.
        await h.wait_for(lambda: {f["fill_id"] for fills in h.observed.fills.values() for f in fills}
                         >= {e.exec_id for e in h.sim.executions()}, timeout=20, what="every execution's fill")
        assert_exactly_once(h, [r.order_id for r in requests])
        # Every order got an answer in the end: none is left for the watchdog to look up again.
        assert h.app.service.unanswered == 0
    finally:
        await h.stop()


def with_application_name(database_url: str, name: str) -> str:
    """``database_url`` whose connections call themselves ``name`` (in ``pg_stat_activity``)."""
    parts = urlsplit(database_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"] + [("application_name", name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def drop_database_connections(database_url: str, application_name: str) -> int:
    """What a PostgreSQL restart or a network cut does to the worker: its connections are closed (only the
    worker's, named ``application_name``: the server may be shared by other test runs)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name = %s", (application_name,),
                            ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


async def test_database_connections_dropped_mid_stream_lose_and_duplicate_nothing(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    name = f"resilience-{uuid.uuid4().hex[:8]}"
    named = with_application_name(database_url, name)  # the harness sets up through its own pool, then closes it
    async with running_harness(kafka_bootstrap, named, kafka_topics, ibkr_order_answer_timeout=1) as h:
        await h.wait_for(lambda: h.app is not None and h.app.service.reconciled, what="ready")
        requests = [order(quantity="1") for _ in range(60)]
        for i, request in enumerate(requests):
            await h.send(request)
            if i in (20, 40):
                await asyncio.sleep(0.05)  # some orders on their way: recording, placed, reported
                assert drop_database_connections(database_url, name) >= 1
        for request in requests:
            await h.wait_status(request.order_id, "FILLED", timeout=60)
        await h.wait_for(lambda: {f["fill_id"] for fills in h.observed.fills.values() for f in fills}
                         >= {e.exec_id for e in h.sim.executions()}, timeout=30, what="every execution's fill")
        assert_exactly_once(h, [r.order_id for r in requests])
