"""A fill: one IBKR execution of an order of ours, as the ledger records it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from workers.domain.orders import Side


@dataclass(frozen=True)
class Fill:
    """One IBKR execution of a ledger order (``fill_id`` is IBKR's execId, stable across replays).

    ``corrects_fill_id``: the execId this one corrects (IBKR's ``.01`` -> ``.02`` of the same execution).
    """

    fill_id: str
    order_id: str
    con_id: int
    side: Side
    quantity: Decimal
    price: Decimal
    currency: str
    exchange: str
    executed_at: datetime
    ib_order_id: int
    ib_perm_id: int
    cumulative_quantity: Decimal
    avg_price: Decimal
    commission: Decimal | None = None
    commission_currency: str | None = None
    corrects_fill_id: str | None = None


def is_correction(exec_id: str) -> bool:
    """True when ``exec_id`` is a later version of an execution (its last part above ``01``)."""
    base, _, version = exec_id.rpartition(".")
    return bool(base) and version.isdigit() and int(version) > 1


def corrected_fill_id(exec_id: str, earlier: list[str]) -> str | None:
    """The execId among ``earlier`` (an order's recorded fills) that ``exec_id`` corrects: the same
    execution with a lower last part (``….01`` is corrected by ``….02``); the latest such one."""
    if not is_correction(exec_id):
        return None
    base = exec_id.rpartition(".")[0]
    same = [f for f in earlier if f.rpartition(".")[0] == base and f != exec_id]
    return max(same, key=lambda fid: int(fid.rpartition(".")[2] or 0)) if same else None
