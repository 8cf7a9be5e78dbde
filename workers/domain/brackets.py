"""Brackets: a parent order with a take-profit and a stop-loss on the other side, derived and sent as one group.

The children's ids are derived from the parent's, so the same parent request always gives the same children
(a redelivery records nothing new): ``uuid5(UUID(parent_order_id), "take_profit")`` and ``"stop_loss"``.
Both children share one OCA group: the fill of one cancels (or, after a partial fill, reduces) the other.
IBKR works them only once the parent has filled.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from workers.domain.orders import Order, OrderRequested, OrderType, Side

TAKE_PROFIT = "take_profit"
STOP_LOSS = "stop_loss"
# The legs in the order they are recorded and sent: the parent's last child carries IBKR's transmit flag.
LEGS = (TAKE_PROFIT, STOP_LOSS)


def child_order_id(parent_order_id: str, leg: str) -> str:
    """The ``order_id`` of a bracket's ``leg`` (``take_profit`` or ``stop_loss``)."""
    return str(uuid.uuid5(uuid.UUID(parent_order_id), leg))


def bracket_oca_group(parent_order_id: str) -> str:
    """The OCA group of a bracket's children."""
    return f"bracket:{parent_order_id}"


def is_bracket(order: OrderRequested) -> bool:
    """True when ``order`` asks for a take-profit or a stop-loss (it is a bracket's parent)."""
    return order.take_profit_price is not None or order.stop_loss_price is not None


def bracket_children(parent: OrderRequested) -> list[tuple[str, OrderRequested]]:
    """The children ``parent`` asks for, each with its leg: a LIMIT take-profit and a STOP stop-loss, on the
    other side, for the parent's quantity, in the parent's time in force."""
    other = Side.SELL if parent.side is Side.BUY else Side.BUY
    base = replace(parent, side=other, take_profit_price=None, stop_loss_price=None,
                   oca_group=bracket_oca_group(parent.order_id), trailing_amount=None, trailing_percent=None,
                   limit_offset=None, algo=None, algo_priority=None, expires_at=None)
    children: list[tuple[str, OrderRequested]] = []
    if parent.take_profit_price is not None:
        children.append((TAKE_PROFIT, replace(base, order_id=child_order_id(parent.order_id, TAKE_PROFIT),
                                              order_type=OrderType.LIMIT, limit_price=parent.take_profit_price,
                                              stop_price=None)))
    if parent.stop_loss_price is not None:
        children.append((STOP_LOSS, replace(base, order_id=child_order_id(parent.order_id, STOP_LOSS),
                                            order_type=OrderType.STOP, limit_price=None,
                                            stop_price=parent.stop_loss_price)))
    return children


def group_root(order: Order) -> str:
    """The ``order_id`` of the group ``order`` belongs to: its parent's, or its own."""
    return order.parent_order_id or order.order_id


def group_member_ids(parent: Order) -> list[str]:
    """The ``order_id``s of ``parent``'s group, in sending order: the parent, then its children."""
    return [parent.order_id, *(child.order_id for _, child in bracket_children(parent.request))]
