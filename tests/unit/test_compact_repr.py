"""ib_insync's Trade gets a short repr: what identifies the trade and its state, not its 150 order fields."""

from __future__ import annotations

from ib_insync import MarketOrder, OrderStatus, Stock, Trade

from workers.adapters.ibkr import compact_repr


def test_a_trade_is_shown_by_its_ids_and_state() -> None:
    compact_repr.install()
    order = MarketOrder("BUY", 3, orderRef="order-1", account="DU0000001")
    order.orderId, order.clientId, order.permId = 41, 7, 900
    trade = Trade(Stock("AAPL", "SMART", "USD", conId=265598), order,
                  OrderStatus(orderId=41, status="Submitted", filled=1, remaining=2), [], [])

    text = f"orderStatus: {trade}"

    assert text == ("orderStatus: Trade(orderId=41, clientId=7, permId=900, orderRef='order-1', action=BUY, "
                    "totalQuantity=3, orderType=MKT, conId=265598, status=Submitted, filled=1, remaining=2, "
                    "fills=0)")
    assert "account" not in text and "DU0000001" not in text  # nor any other field of the order
