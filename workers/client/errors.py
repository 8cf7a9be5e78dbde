"""The client's errors: one base class, one type per way a call can fail."""

from __future__ import annotations

from workers.client.events import OrderStatusChanged


class OrderClientError(Exception):
    """Base of the client's errors."""


class TopicMissing(OrderClientError):
    """A topic the client needs does not exist (run ``ibkr-workers topics``)."""


class ClientClosed(OrderClientError):
    """The client was closed, or its consumer failed, while a caller was waiting."""


class OrderTimeout(OrderClientError, TimeoutError):
    """The order did not get where the caller waited for within the timeout."""

    def __init__(self, order_id: str, waited_for: str, last: OrderStatusChanged | None) -> None:
        seen = last.status.value if last is not None else "no status yet"
        super().__init__(f"order {order_id}: timed out waiting for {waited_for} (last: {seen})")
        self.order_id = order_id
        self.last = last
