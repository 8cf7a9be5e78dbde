"""When ib_insync's record of an order is settled, so that it can be forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ib_insync import IB, Contract, Order, OrderStatus, Trade
from ib_insync.objects import CommissionReport, Execution, Fill, TradeLogEntry

from workers.adapters.ibkr.retention import is_settled, prune

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def a_fill(exec_id: str, shares: float, commission_in: bool = True) -> Fill:
    report = CommissionReport(execId=exec_id if commission_in else "", commission=1.0, currency="USD")
    return Fill(Contract(conId=265598), Execution(execId=exec_id, shares=shares), report, NOW)


def a_trade(status: str, filled: float, fills: list[Fill]) -> Trade:
    return Trade(Contract(conId=265598), Order(orderId=7, totalQuantity=10), OrderStatus(status=status, filled=filled),
                 fills, [])


def test_a_filled_order_with_every_execution_and_commission_is_settled() -> None:
    assert is_settled(a_trade("Filled", 10, [a_fill("e1", 4), a_fill("e2", 6)]))


def test_a_filled_order_whose_last_execution_has_not_arrived_is_not_settled() -> None:
    # IBKR may send the Filled status before the executions.
    assert not is_settled(a_trade("Filled", 10, [a_fill("e1", 4)]))


def test_a_filled_order_missing_a_commission_is_not_settled() -> None:
    assert not is_settled(a_trade("Filled", 10, [a_fill("e1", 4), a_fill("e2", 6, commission_in=False)]))


def test_a_working_order_is_not_settled() -> None:
    assert not is_settled(a_trade("Submitted", 4, [a_fill("e1", 4)]))


def test_an_order_cancelled_unfilled_is_settled() -> None:
    assert is_settled(a_trade("Cancelled", 0, []))


@pytest.mark.parametrize(("status", "forgotten_after"), [
    ("PendingSubmit", 600),  # never acknowledged: IBKR dropped it (the watchdog places it again)
    ("Inactive", 600),
    ("Cancelled", 5),
    ("Submitted", None),  # working at IBKR: kept however long it rests
    ("PreSubmitted", None),
])
def test_a_trade_is_forgotten_after_its_retention_unless_it_works_at_ibkr(status: str,
                                                                          forgotten_after: int | None) -> None:
    wrapper = IB().wrapper
    trade = a_trade(status, 0, [])
    trade.log.append(TradeLogEntry(time=NOW, status=status))
    wrapper.trades[(1, 7)] = trade
    for seconds in (4, 6, 599, 601, 86_400):
        prune(wrapper, NOW + timedelta(seconds=seconds), settled_for=5, unsettled_for=600)
        expected_gone = forgotten_after is not None and seconds > forgotten_after
        assert ((1, 7) not in wrapper.trades) == expected_gone, seconds
