"""The domain's Order: how it is recorded from a request, and which changes it takes (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.order_service_fakes import an_order
from workers.domain.orders import (
    LEGAL_TRANSITIONS,
    Algo,
    AlgoPriority,
    NewOrder,
    Order,
    OrderState,
    OrderType,
    StatusChange,
    TimeInForce,
    differing_terms,
)

S = OrderState
NOW = datetime(2026, 1, 5, 15, 0, 2, tzinfo=UTC)


def recorded(state: OrderState = S.ACCEPTED, **fields: object) -> Order:
    order = Order.recorded(NewOrder(an_order(), S.ACCEPTED, source_topic="orders.requested", source_partition=1,
                                    source_offset=9), owner_client_id=7, now=NOW)
    return replace(order, state=state, **fields)  # type: ignore[arg-type]


def test_an_accepted_request_is_recorded_with_its_terms_its_source_and_nothing_filled() -> None:
    request = an_order()

    order = Order.recorded(NewOrder(request, S.ACCEPTED, None, "orders.requested", 1, 9), 7, now=NOW)

    assert order.request == request
    assert (order.state, order.filled_quantity, order.remaining_quantity) == (S.ACCEPTED, 0, request.quantity)
    assert (order.source_topic, order.source_partition, order.source_offset) == ("orders.requested", 1, 9)
    assert (order.owner_client_id, order.ib_client_id, order.ib_order_id) == (7, None, None)
    assert order.accepted_at == order.updated_at == NOW


def test_the_terms_of_version_4_are_recorded_and_a_request_differing_in_them_is_another_order() -> None:
    request = an_order(order_type=OrderType.TRAILING_STOP, trailing_percent=Decimal("1.5"),
                       time_in_force=TimeInForce.GTD, good_till=datetime(2026, 1, 9, 21, tzinfo=UTC),
                       algo_priority=AlgoPriority.URGENT, oca_group="g")
    order = Order.recorded(NewOrder(request, S.ACCEPTED), 7, now=NOW)
    assert order.request == request
    assert differing_terms(order.request, replace(request, source="retry", created_at=NOW)) == ()
    changed = replace(request, trailing_percent=Decimal(2), good_till=None, algo=Algo.ADAPTIVE, oca_group=None)
    assert differing_terms(order.request, changed) == ("trailing_percent", "good_till", "algo", "oca_group")


def test_a_rejected_request_is_recorded_with_its_reason_and_nothing_remaining() -> None:
    order = Order.recorded(NewOrder(an_order(), S.REJECTED, "ACCOUNT_NOT_ALLOWED: no"), 7, now=NOW)

    assert (order.state, order.remaining_quantity, order.reason) == (S.REJECTED, 0, "ACCOUNT_NOT_ALLOWED: no")
    assert order.is_final


def test_a_legal_change_gives_the_order_with_ibkrs_fields_and_keeps_the_others() -> None:
    order = recorded(S.SUBMITTED, ib_perm_id=9001, reason="kept")

    after = order.after(StatusChange(order.order_id, S.PARTIALLY_FILLED, filled=Decimal(4), remaining=Decimal(6),
                                     avg_price=Decimal("187.5")), now=NOW)

    assert after is not None
    assert (after.state, after.filled_quantity, after.remaining_quantity) == (S.PARTIALLY_FILLED, 4, 6)
    assert (after.avg_fill_price, after.ib_perm_id, after.reason) == (Decimal("187.5"), 9001, "kept")
    assert order.state is S.SUBMITTED  # orders are values: the old one is unchanged


@pytest.mark.parametrize(("current", "requested"), [
    (S.FILLED, S.SUBMITTED), (S.CANCELLED, S.FILLED), (S.REJECTED, S.CANCELLED), (S.ACCEPTED, S.SUBMITTED),
    (S.PARTIALLY_FILLED, S.SUBMITTED),
])
def test_an_illegal_change_changes_nothing(current: OrderState, requested: OrderState) -> None:
    assert recorded(current).after(StatusChange(recorded().order_id, requested)) is None


def test_staying_in_a_state_is_no_change() -> None:
    order = recorded(S.SUBMITTED)

    assert order.after(StatusChange(order.order_id, S.SUBMITTED, perm_id=5)) is None


def test_a_partially_filled_order_changes_only_when_its_filled_quantity_moves() -> None:
    order = recorded(S.PARTIALLY_FILLED, filled_quantity=Decimal(4))

    assert order.after(StatusChange(order.order_id, S.PARTIALLY_FILLED, filled=Decimal(4))) is None
    assert order.after(StatusChange(order.order_id, S.PARTIALLY_FILLED)) is None
    moved = order.after(StatusChange(order.order_id, S.PARTIALLY_FILLED, filled=Decimal(7)))
    assert moved is not None and moved.filled_quantity == Decimal(7)


def test_a_change_limited_to_some_states_is_refused_from_the_others() -> None:
    only_while_placing = frozenset({S.PLACING})
    change = StatusChange(recorded().order_id, S.REJECTED, reason="IBKR_REJECTED: x", only_from=only_while_placing)

    assert recorded(S.SUBMITTED).after(change) is None
    rejected = recorded(S.PLACING).after(change)
    assert rejected is not None and (rejected.state, rejected.reason) == (S.REJECTED, "IBKR_REJECTED: x")


def test_a_change_of_another_order_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="applied to order"):
        recorded().after(StatusChange("another", S.CANCELLED))


@given(st.sampled_from(list(OrderState)), st.sampled_from(list(OrderState)))
def test_a_change_is_taken_exactly_when_the_life_cycle_allows_it(current: OrderState, requested: OrderState) -> None:
    order = recorded(current, filled_quantity=Decimal(1))
    after = order.after(StatusChange(order.order_id, requested, filled=Decimal(2)))

    assert (after is not None) == (requested in LEGAL_TRANSITIONS[current])
