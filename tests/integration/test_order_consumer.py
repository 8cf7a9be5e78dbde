"""The order-consumer end to end: real Kafka, real PostgreSQL, the sim gateway over the TWS socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest

from tests.integration.harness import AAPL, ES, EURUSD, SPY_CALL, Harness, order, running_harness
from workers.adapters.kafka.event_sink import AvroEventSink
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.domain.orders import NewOrder, OrderState, OrderType, Side, TimeInForce
from workers.domain.positions import Position
from workers.ports.ibkr import IbCommission, IbExecution, IbPosition
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


async def test_market_order_is_filled_with_fill_and_commission(harness: Harness) -> None:
    request = order()
    await harness.send(request)
    filled = await harness.wait_status(request.order_id, "FILLED")
    assert filled["filled_quantity"] == Decimal(10)
    assert filled["remaining_quantity"] == Decimal(0)
    assert filled["ib_order_id"] is not None and filled["ib_perm_id"]
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
    fill = harness.observed.fills[request.order_id][0]
    assert fill["quantity"] == Decimal(10)
    assert fill["con_id"] == AAPL.con_id
    assert fill["instrument_id"] == AAPL.instrument_id
    assert fill["commission"] is not None and fill["commission"] > 0
    assert harness.status_trail(request.order_id)[0] == "ACCEPTED"
    assert harness.sim.place_count(request.order_id) == 1


@pytest.mark.parametrize("instrument", [ES, EURUSD, SPY_CALL], ids=["FUT", "CASH", "OPT"])
async def test_each_sec_type_is_placed_by_con_id_and_filled(harness: Harness, instrument: object) -> None:
    request = order(instrument.instrument_id, quantity="2")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
    assert harness.observed.fills[request.order_id][0]["con_id"] == instrument.con_id


async def test_limit_stop_and_stop_limit_orders_fill_when_marketable(harness: Harness) -> None:
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    marketable = [
        order(order_type=OrderType.LIMIT, limit=str(price + 1)),
        order(side=Side.SELL, order_type=OrderType.LIMIT, limit=str(price - 1), tif=TimeInForce.GTC),
        order(order_type=OrderType.STOP, stop=str(price - 1)),
        order(order_type=OrderType.STOP_LIMIT, stop=str(price - 1), limit=str(price + 2),
              tif=TimeInForce.IOC),
    ]
    for request in marketable:
        await harness.send(request)
    for request in marketable:
        await harness.wait_status(request.order_id, "FILLED")
        assert harness.sim.place_count(request.order_id) == 1


async def test_resting_limit_order_is_cancelled_on_request(harness: Harness) -> None:
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    request = order(order_type=OrderType.LIMIT, limit=str(price - 20), tif=TimeInForce.GTC)
    await harness.send(request)
    await harness.wait_status(request.order_id, "SUBMITTED")
    await harness.cancel(request.order_id)
    cancelled = await harness.wait_status(request.order_id, "CANCELLED")
    assert cancelled["filled_quantity"] == Decimal(0)
    assert "CANCEL_PENDING" in harness.status_trail(request.order_id)
    assert harness.sim.open_orders() == []


async def test_cancel_before_order_arrives_cancels_it(harness: Harness) -> None:
    request = order()
    await harness.cancel(request.order_id)
    await harness.wait_for(lambda: harness.app is not None and harness.app.loop.consumed >= 1, what="cancel")
    await harness.send(request)
    cancelled = await harness.wait_status(request.order_id, "CANCELLED")
    assert "before the order" in (cancelled["reason"] or "")
    assert harness.sim.place_count(request.order_id) == 0


async def test_redelivered_order_is_placed_once(harness: Harness) -> None:
    request = order()
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.send(request)  # the same event again, as a redelivery would bring it
    await harness.wait_for(lambda: harness.status_trail(request.order_id).count("FILLED") >= 2,
                           what="the re-published status")
    assert harness.sim.place_count(request.order_id) == 1
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) >= 1, what="the fill")
    assert len(harness.observed.fills[request.order_id]) == 1


async def test_an_order_recorded_but_never_sent_is_placed_once_when_its_batch_comes_again(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, ibkr_order_answer_timeout=1) as h:
        assert h.app is not None
        service = h.app.service
        await h.wait_for(lambda: service.reconciled, what="the worker running")
        request = order(quantity="3")
        # The state a recording statement leaves when it commits and its answer is lost (the database
        # connection breaks): PLACING, with an IBKR id, never sent. The consume loop then handles the
        # batch again, which the ledger sees as a redelivery.
        pool = await open_pool(database_url)
        try:
            sink = AvroEventSink(h.codec, h.topics, f"order-consumer:{service.client_id}")
            assert service.placer.next_ib_order_id is not None
            far_above = service.placer.next_ib_order_id + 100_000  # clear of the ids the worker hands out
            [row] = await OrderLedger(pool).record_new([NewOrder(request, OrderState.ACCEPTED)], service.client_id,
                                                       sink.status, {request.order_id: far_above})
        finally:
            await close_pool(pool)
        assert row.state is OrderState.PLACING and h.sim.place_count(request.order_id) == 0

        await h.send(request)
        await h.wait_status(request.order_id, "FILLED")

        assert h.sim.place_count(request.order_id) == 1
        assert service.unanswered == 0


@pytest.mark.parametrize(("changes", "reason"), [
    ({"account": "DU7777777"}, "ACCOUNT_NOT_ALLOWED"),
    ({"instrument_id": "STK:NOPE:USD"}, "UNKNOWN_INSTRUMENT"),
    ({"order_type": OrderType.LIMIT}, "MISSING_LIMIT_PRICE"),
    ({"order_type": OrderType.LIMIT, "limit": "100.001"}, "PRICE_OFF_TICK"),
    ({"quantity": "0"}, "INVALID_QUANTITY"),
    ({"order_id": "not-a-uuid"}, "INVALID_ORDER_ID"),
])
async def test_rejected_orders_never_reach_ibkr(harness: Harness, changes: dict[str, object],
                                                reason: str) -> None:
    request = order(**changes)  # type: ignore[arg-type]
    await harness.send(request)
    rejected = await harness.wait_status(request.order_id, "REJECTED")
    assert rejected["reason"].startswith(reason)
    assert harness.sim.place_count(request.order_id) == 0


async def test_order_rejected_by_ibkr_carries_the_code(harness: Harness) -> None:
    harness.sim.reject_next_order(201, "Order rejected - reason: test rejection")
    request = order()
    await harness.send(request)
    rejected = await harness.wait_status(request.order_id, "REJECTED")
    assert rejected["ib_error_code"] == 201
    assert "201" in rejected["reason"]


async def test_undecodable_records_go_to_the_dead_letter_topic_and_valid_orders_still_fill(
        harness: Harness) -> None:
    good = [order() for _ in range(3)]
    valid_bytes = harness.codec.encode("OrderRequested", {
        "order_id": good[0].order_id, "account": "x", "instrument_id": "y", "side": "BUY",
        "quantity": Decimal(1), "order_type": "MARKET", "limit_price": None, "stop_price": None,
        "created_at": good[0].created_at})
    garbage = [(b"k1", b"not avro at all"), (b"k2", valid_bytes[:12]),
               (b"k3", harness.codec.encode("OrderCancelRequested", {
                   "order_id": "o", "account": "a", "requested_at": good[0].created_at}))]
    await harness.send(good[0])
    for key, value in garbage[:2]:
        await harness.send_raw(key, value)
    await harness.send(good[1])
    await harness.send_raw(*garbage[2])
    await harness.send(good[2])
    for request in good:
        await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 3, what="three dead letters")
    by_key = {record.key: record for record in harness.observed.dead_letters}
    for key, value in garbage:
        record = by_key[key]
        assert record.value == value
        headers = dict(record.headers)
        assert headers["source.topic"] == harness.topics.orders_requested.encode()
        assert headers["error.stage"] == b"decode"
        assert headers["error.reason"]
        assert int(headers["source.offset"]) >= 0


async def test_partial_fills_sum_to_the_order(harness: Harness) -> None:
    harness.sim.config.clip_size = 3
    harness.sim.config.clip_interval = 0.05
    request = order(quantity="10")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: sum(f["quantity"] for f in harness.observed.fills[request.order_id])
                           == Decimal(10), what="fills summing to 10")
    fills = harness.observed.fills[request.order_id]
    assert [f["quantity"] for f in fills] == [Decimal(3), Decimal(3), Decimal(3), Decimal(1)]
    assert len({f["fill_id"] for f in fills}) == 4
    assert "PARTIALLY_FILLED" in harness.status_trail(request.order_id)


async def test_readonly_mode_records_but_never_places(kafka_bootstrap: str, database_url: str,
                                                      kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, ibkr_readonly=True) as h:
        request = order()
        await h.send(request)
        accepted = await h.wait_status(request.order_id, "ACCEPTED")
        assert accepted["ib_order_id"] is None
        pool = await open_pool(database_url)
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT state FROM orders WHERE order_id = %s", (request.order_id,))
                assert await cursor.fetchone() == ("ACCEPTED",)
        finally:
            await close_pool(pool)
        assert h.sim.place_count(request.order_id) == 0
        assert h.sim.orders_seen == []


async def test_probes_and_metrics_during_a_run_match_the_orders_sent(harness: Harness) -> None:
    import httpx

    assert harness.app is not None
    good = [order() for _ in range(4)]
    bad = order(account="DU7777777")
    for request in [*good, bad]:
        await harness.send(request)
    for request in good:
        await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_status(bad.order_id, "REJECTED")
    await harness.wait_for(lambda: sum(len(f) for f in harness.observed.fills.values()) >= 4, what="fills")
    base = f"http://127.0.0.1:{harness.app.probes.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await harness.wait_for(lambda: harness.app is not None and harness.app.monitor.last is not None
                               and harness.app.monitor.last.status.value == "HEALTHY", what="HEALTHY")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        text = (await client.get("/metrics")).text
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples["ibkr_workers_orders_consumed_total"] == 5
    assert samples["ibkr_workers_orders_placed_total"] == 4
    assert samples['ibkr_workers_orders_rejected_total{reason="ACCOUNT_NOT_ALLOWED"}'] == 1
    assert samples["ibkr_workers_fills_total"] == 4


async def test_execution_correction_replaces_the_fill_instead_of_adding_one(harness: Harness) -> None:
    request = order(quantity="5")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
    original = harness.observed.fills[request.order_id][0]
    assert original["corrects_fill_id"] is None
    corrected_id = harness.sim.correct_execution(original["fill_id"], price=float(original["price"]) + 0.01)
    assert corrected_id.endswith(".02")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 2, what="the correction")
    correction = harness.observed.fills[request.order_id][1]
    assert correction["fill_id"] == corrected_id
    assert correction["corrects_fill_id"] == original["fill_id"]
    assert correction["price"] == original["price"] + Decimal("0.01")


async def test_positions_are_published_after_fills(harness: Harness) -> None:
    request = order(quantity="7")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(
        lambda: any(p["con_id"] == AAPL.con_id and p["quantity"] == Decimal(7) for p in harness.observed.positions),
        what="a position of 7 AAPL")
    position = next(p for p in harness.observed.positions if p["quantity"] == Decimal(7))
    assert position["instrument_id"] == AAPL.instrument_id
    assert position["account"] == "DU0000001"


async def test_a_future_position_carries_its_price_as_quoted_and_its_cost_per_contract(harness: Harness) -> None:
    request = order(ES.instrument_id, quantity="2")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) >= 1, what="the ES fill")
    fill_price = harness.observed.fills[request.order_id][0]["price"]
    await harness.wait_for(
        lambda: any(p["con_id"] == ES.con_id and p["quantity"] == Decimal(2) for p in harness.observed.positions),
        what="a position of 2 ES")
    position = next(p for p in harness.observed.positions if p["con_id"] == ES.con_id and p["quantity"] == 2)

    assert ES.multiplier is not None
    # IBKR's cost basis per contract (multiplier and commission in it) stays as it is ...
    assert position["avg_cost"] > fill_price * ES.multiplier * Decimal("0.99")
    # ... and the price is what a person reads on a quote: the cost over the multiplier.
    assert position["avg_price"] == (position["avg_cost"] / ES.multiplier).quantize(Decimal("1e-8"))
    assert abs(position["avg_price"] - fill_price) < Decimal(1)


async def test_positions_table_matches_the_sims_positions_after_a_sequence_of_fills(harness: Harness) -> None:
    from workers.adapters.postgres.positions import PositionStore

    sequence = [order(quantity="10"), order(quantity="4", side=Side.SELL), order(ES.instrument_id, quantity="3"),
                order(quantity="6")]
    for request in sequence:
        await harness.send(request)
        await harness.wait_status(request.order_id, "FILLED")
    at_sim = {}
    for con_id in (AAPL.con_id, ES.con_id):
        position = harness.sim.position("DU0000001", con_id)
        assert position is not None
        at_sim[con_id] = Decimal(str(position.quantity))
    assert at_sim == {AAPL.con_id: Decimal(12), ES.con_id: Decimal(3)}
    pool = await open_pool(harness.database_url)
    try:
        store = PositionStore(pool)
        rows: dict[int, Position] = {}
        deadline = asyncio.get_running_loop().time() + 15
        while {con_id: row.quantity for con_id, row in rows.items()} != at_sim:
            assert asyncio.get_running_loop().time() < deadline, f"positions table {rows} vs sim {at_sim}"
            await asyncio.sleep(0.1)
            rows = {row.con_id: row for row in await store.all() if row.account == "DU0000001"}
        assert rows[AAPL.con_id].instrument_id == AAPL.instrument_id
        assert rows[ES.con_id].instrument_id == ES.instrument_id
    finally:
        await close_pool(pool)


async def stored_positions(harness: Harness, account: str) -> dict[int, Decimal]:
    from workers.adapters.postgres.positions import PositionStore

    pool = await open_pool(harness.database_url)
    try:
        return {row.con_id: row.quantity for row in await PositionStore(pool).all() if row.account == account}
    finally:
        await close_pool(pool)


async def test_a_position_reported_again_before_the_next_write_is_written_once_at_its_latest(
        harness: Harness) -> None:
    assert harness.app is not None
    app = harness.app
    await harness.wait_for(lambda: app.service.reconciled, what="the worker running")
    account, con_id = "DU0000042", 990_001  # not one the sim trades: only these reports move it
    for quantity in ("1", "2", "3"):  # three report batches, as three fills would bring
        await harness.app.service.on_reports([IbPosition(account, con_id, Decimal(quantity), Decimal("10.5"), "USD")])

    await harness.wait_for(lambda: any(p["account"] == account for p in harness.observed.positions),
                           what="the position's record")
    await asyncio.sleep(0.5)  # several write intervals: anything else would have gone out by now

    published = [p for p in harness.observed.positions if p["account"] == account]
    assert [(p["con_id"], p["quantity"]) for p in published] == [(con_id, Decimal(3))]
    assert await stored_positions(harness, account) == {con_id: Decimal(3)}


async def test_positions_noted_just_before_shutdown_are_written_and_published(harness: Harness) -> None:
    assert harness.app is not None
    app = harness.app
    await harness.wait_for(lambda: app.service.reconciled, what="the worker running")
    account, con_id = "DU0000043", 990_002
    await harness.app.service.on_reports([IbPosition(account, con_id, Decimal(-4), Decimal("99"), "USD")])
    await harness.stop_consumer()  # within the write interval: the shutdown's drain writes it

    assert await stored_positions(harness, account) == {con_id: Decimal(-4)}
    await harness.wait_for(lambda: any(p["account"] == account for p in harness.observed.positions),
                           what="the position's record")


async def test_unknown_instrument_in_the_id_convention_is_resolved_on_demand_when_allowed(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics,
                               instrument_resolve_on_demand=True) as h:
        request = order("STK:MSFT:USD", quantity="3")  # not in the mapper; the sim knows MSFT
        await h.send(request)
        await h.wait_status(request.order_id, "FILLED")
        await h.wait_for(lambda: len(h.observed.fills[request.order_id]) == 1, what="the fill")
        assert h.observed.fills[request.order_id][0]["con_id"] == 272093
        unknown = order("STK:NOPE:USD")
        await h.send(unknown)
        rejected = await h.wait_status(unknown.order_id, "REJECTED")
        assert rejected["reason"].startswith("UNKNOWN_INSTRUMENT")


async def test_informational_ibkr_messages_never_cancel_a_working_order(harness: Harness) -> None:
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    resting = order(order_type=OrderType.LIMIT, limit=str(price - 25), tif=TimeInForce.GTC)
    await harness.send(resting)
    await harness.wait_status(resting.order_id, "SUBMITTED")
    for code in (2104, 2106, 2158, 1100, 1102, 10197):
        harness.sim.send_system_message(code)
    await asyncio.sleep(1.0)
    assert harness.status_trail(resting.order_id)[-1] == "SUBMITTED"
    assert harness.app is not None
    assert (await harness.app.service.ledger.get(resting.order_id)).state.value == "SUBMITTED"  # type: ignore[union-attr]
    assert [o.request.order_ref for o in harness.sim.open_orders()] == [resting.order_id]


async def test_a_commission_in_the_report_batch_of_its_execution_is_kept_also_for_a_replayed_one(
        harness: Harness) -> None:
    request = order(quantity="3")
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
    assert harness.app is not None
    fills = FillStore(harness.app.pool)
    recorded = await fills.get(harness.observed.fills[request.order_id][0]["fill_id"])
    assert recorded is not None
    # As if its commission report had been lost with the connection: IBKR replays both after a reconnect.
    with psycopg.connect(harness.database_url, autocommit=True) as conn:
        conn.execute("UPDATE fills SET commission = NULL, commission_currency = NULL WHERE fill_id = %s",
                     (recorded.fill_id,))

    def execution(exec_id: str) -> IbExecution:
        return IbExecution(
            exec_id=exec_id, order_ref=request.order_id, ib_order_id=recorded.ib_order_id,
            perm_id=recorded.ib_perm_id, con_id=recorded.con_id, side=str(recorded.side),
            quantity=recorded.quantity, price=recorded.price, cumulative_quantity=recorded.cumulative_quantity,
            avg_price=recorded.avg_price, account=request.account, exchange=recorded.exchange,
            currency=recorded.currency, executed_at=recorded.executed_at)

    new_exec_id = f"{recorded.fill_id}-more.01"
    await harness.app.service.on_reports([
        execution(recorded.fill_id), IbCommission(recorded.fill_id, Decimal("1.25"), "USD"),
        execution(new_exec_id), IbCommission(new_exec_id, Decimal("0.75"), "EUR"),
    ])

    replayed, new = await fills.get(recorded.fill_id), await fills.get(new_exec_id)
    assert replayed is not None and (replayed.commission, replayed.commission_currency) == (Decimal("1.25"), "USD")
    assert new is not None and (new.commission, new.commission_currency) == (Decimal("0.75"), "EUR")
    await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 2, what="the new fill")
    published = harness.observed.fills[request.order_id][1]
    assert (published["fill_id"], published["commission"]) == (new_exec_id, Decimal("0.75"))


async def test_every_status_record_carries_the_orders_working_terms(harness: Harness) -> None:
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    resting = order(order_type=OrderType.LIMIT, limit=str(price - 20), quantity="7", tif=TimeInForce.GTC)

    await harness.send(resting)
    await harness.wait_status(resting.order_id, "SUBMITTED")

    for record in harness.observed.statuses[resting.order_id]:
        assert (record["quantity"], record["limit_price"], record["stop_price"], record["time_in_force"]) == (
            Decimal(7), price - 20, None, "GTC")
        assert record["modify_id"] is None and record["parent_order_id"] is None
