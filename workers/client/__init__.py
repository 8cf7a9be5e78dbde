"""The client side of the contract: send orders and cancels, follow their statuses and fills.

    from workers.client import OrderClient
"""

from workers.client.errors import ClientClosed, OrderClientError, OrderTimeout, TopicMissing
from workers.client.events import (
    ClientEvent,
    FillExecuted,
    OrderEvent,
    OrderStatusChanged,
    PositionUpdated,
)
from workers.client.order_client import OrderClient, OrderTrack
from workers.client.reading import open_reader

__all__ = [
    "ClientClosed",
    "ClientEvent",
    "FillExecuted",
    "OrderClient",
    "OrderClientError",
    "OrderEvent",
    "OrderStatusChanged",
    "OrderTimeout",
    "OrderTrack",
    "PositionUpdated",
    "TopicMissing",
    "open_reader",
]
