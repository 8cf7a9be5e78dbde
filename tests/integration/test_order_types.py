"""The order types, GTD and the Adaptive algo of OrderRequested version 4, end to end: each reaches the sim
gateway over the TWS socket with IB's fields, and its outcome is published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from ib_insync import Order as IbOrder

from ibkr_sim import handlers as sim_handlers
from ibkr_sim.requests import OrderRequest, parse_place_order
from tests.integration.harness import AAPL, Harness, order, running_harness
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.domain.orders import Algo, AlgoPriority, OrderRequested, OrderType, Side, TimeInForce
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

FINAL_OR_WORKING = {"SUBMITTED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED"}


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The raw fields of each placeOrder the sim receives, by orderRef: what went over the TWS socket,
    including the fields the sim does not interpret (trailingPercent, lmtPriceOffset, the algo's)."""
    seen: dict[str, list[str]] = {}

    def recording(fields: list[str], version: int) -> OrderRequest:
        request = parse_place_order(fields, version)
        seen[request.order_ref] = list(fields)
        return request

    monkeypatch.setattr(sim_handlers, "parse_place_order", recording)
    return seen


def consecutive(fields: list[str], wanted: list[str]) -> bool:
    return any(fields[i:i + len(wanted)] == wanted for i in range(len(fields)))


def sent_order(harness: Harness, order_id: str) -> IbOrder:
    """The ib_insync order the worker sent for ``order_id``."""
    assert harness.app is not None
    [trade] = [t for t in harness.app.gateway.ib.trades() if t.order.orderRef == order_id]
    return trade.order


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


def market_price(harness: Harness) -> Decimal:
    return Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))


async def received(harness: Harness, request: OrderRequested) -> OrderRequest:
    """The placeOrder the sim received for ``request`` (by orderRef), once its outcome is published."""
    await harness.wait_for(lambda: harness.observed.last_status(request.order_id) in FINAL_OR_WORKING,
                           what=f"an outcome of {request.order_type}")
    seen = [req for _, req in harness.sim.broker.requests_seen if req.order_ref == request.order_id]
    assert len(seen) == 1, f"{request.order_type} placed {len(seen)} times"
    return seen[0]


async def test_each_new_order_type_reaches_ibkr_with_ibs_order_type_and_prices(harness: Harness) -> None:
    price = market_price(harness)
    below, above = str(price - 2), str(price + 2)
    requests = {
        "TRAIL": replace(order(order_type=OrderType.TRAILING_STOP), trailing_amount=Decimal("1.50"),
                         stop_price=Decimal(above)),
        "TRAIL LIMIT": replace(order(side=Side.SELL, order_type=OrderType.TRAILING_STOP_LIMIT),
                               trailing_percent=Decimal(1), limit_offset=Decimal("0.10")),
        "MOC": order(order_type=OrderType.MARKET_ON_CLOSE),
        "LOC": order(order_type=OrderType.LIMIT_ON_CLOSE, limit=below),
        "MIT": order(order_type=OrderType.MARKET_IF_TOUCHED, stop=below),
        "LIT": order(order_type=OrderType.LIMIT_IF_TOUCHED, stop=below, limit=below),
    }
    for request in requests.values():
        await harness.send(request)
    seen = {ib_type: await received(harness, request) for ib_type, request in requests.items()}
    assert {ib_type: req.order_type for ib_type, req in seen.items()} == {t: t for t in requests}
    assert (seen["TRAIL"].aux_price, seen["TRAIL"].trail_stop_price, seen["TRAIL"].lmt_price) == (
        1.5, float(above), None)
    assert seen["TRAIL LIMIT"].action == "SELL" and seen["TRAIL LIMIT"].aux_price is None
    assert (seen["MOC"].lmt_price, seen["MOC"].aux_price) == (None, None)
    assert (seen["LOC"].lmt_price, seen["LOC"].aux_price) == (float(below), None)
    assert (seen["MIT"].aux_price, seen["MIT"].lmt_price) == (float(below), None)
    assert (seen["LIT"].aux_price, seen["LIT"].lmt_price) == (float(below), float(below))
    trail_limit = sent_order(harness, requests["TRAIL LIMIT"].order_id)
    assert (trail_limit.trailingPercent, trail_limit.lmtPriceOffset) == (1.0, 0.1)


async def test_a_gtd_order_reaches_ibkr_with_its_good_till_date_in_utc_and_rests(harness: Harness) -> None:
    good_till = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    request = replace(order(order_type=OrderType.LIMIT, limit=str(market_price(harness) - 20),
                            tif=TimeInForce.GTD), good_till=good_till)
    await harness.send(request)
    working = await harness.wait_status(request.order_id, "SUBMITTED")
    assert working["time_in_force"] == "GTD"
    req = await received(harness, request)
    assert (req.tif, req.good_till_date) == ("GTD", good_till.strftime("%Y%m%d-%H:%M:%S"))
    pool = await open_pool(harness.database_url)
    try:
        row = await OrderLedger(pool).get(request.order_id)
    finally:
        await close_pool(pool)
    assert row is not None and row.good_till == good_till and row.time_in_force is TimeInForce.GTD


async def test_an_adaptive_market_order_is_placed_with_its_priority_and_filled(harness: Harness,
                                                                                wire: dict[str, list[str]]) -> None:
    request = replace(order(), algo=Algo.ADAPTIVE, algo_priority=AlgoPriority.PATIENT)
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    req = await received(harness, request)
    assert req.order_type == "MKT"
    # algoStrategy, then the number of algoParams and each tag and value.
    assert consecutive(wire[request.order_id], ["Adaptive", "1", "adaptivePriority", "Patient"])


async def test_a_bracket_on_the_wrong_sides_is_rejected_and_never_reaches_ibkr(harness: Harness) -> None:
    price = market_price(harness)
    bracket = replace(order(order_type=OrderType.LIMIT, limit=str(price - 20)),
                      take_profit_price=price - 30, stop_loss_price=price - 40)

    await harness.send(bracket)

    assert (await harness.wait_status(bracket.order_id, "REJECTED"))["reason"].startswith("INVALID_BRACKET")
    assert harness.sim.place_count(bracket.order_id) == 0
