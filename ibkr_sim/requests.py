"""Parsing of the client requests the sim serves (field layouts of server version 157 and later)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

from ibkr_sim.framing import (
    FieldError,
    parse_bool,
    parse_decimal_qty,
    parse_float,
    parse_int,
)
from ibkr_sim.universe import ContractQuery


class Fields:
    """Cursor over a request's fields; reading past the end raises :class:`FieldError`."""

    __slots__ = ("_fields", "_pos")

    def __init__(self, fields: list[str], start: int = 1) -> None:
        self._fields = fields
        self._pos = start

    def text(self) -> str:
        """Next field as text."""
        try:
            value = self._fields[self._pos]
        except IndexError:
            raise FieldError(f"message ends early (field {self._pos})") from None
        self._pos += 1
        return value

    def integer(self, default: int = 0) -> int:
        """Next field as an integer."""
        return parse_int(self.text(), default)

    def double(self) -> float | None:
        """Next field as a double (``None`` when unset)."""
        return parse_float(self.text())

    def qty(self) -> float:
        """Next field as a quantity."""
        return parse_decimal_qty(self.text())

    def flag(self) -> bool:
        """Next field as a boolean."""
        return parse_bool(self.text())

    def skip(self, count: int) -> None:
        """Skip ``count`` fields."""
        if self._pos + count > len(self._fields):
            raise FieldError(f"message ends early (field {len(self._fields)})")
        self._pos += count

    def rest(self) -> list[str]:
        """The fields not yet read."""
        return self._fields[self._pos :]

    @property
    def remaining(self) -> int:
        """Fields not yet read."""
        return len(self._fields) - self._pos


def read_contract(f: Fields, with_primary_exchange: bool = True) -> ContractQuery:
    """Read the 11 or 12 contract fields most requests start with."""
    con_id = f.integer()
    symbol = f.text()
    sec_type = f.text()
    last_trade_date = f.text()
    strike = f.double()
    right = f.text()
    multiplier = f.text()
    exchange = f.text()
    primary_exchange = f.text() if with_primary_exchange else ""
    currency = f.text()
    local_symbol = f.text()
    trading_class = f.text()
    return ContractQuery(
        con_id=con_id,
        symbol=symbol,
        sec_type=sec_type,
        last_trade_date=last_trade_date,
        strike=strike,
        right=right,
        multiplier=multiplier,
        exchange=exchange,
        primary_exchange=primary_exchange,
        currency=currency,
        local_symbol=local_symbol,
        trading_class=trading_class,
    )


@dataclass(slots=True)
class OrderRequest:
    """A placeOrder request: the contract and the order fields the sim uses or echoes."""

    order_id: int
    contract: ContractQuery
    action: str
    total_quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str = ""
    account: str = ""
    open_close: str = ""
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    block_order: bool = False
    sweep_to_fill: bool = False
    display_size: int = 0
    trigger_method: int = 0
    outside_rth: bool = False
    hidden: bool = False
    discretionary_amt: float | None = None
    good_after_time: str = ""
    good_till_date: str = ""
    model_code: str = ""
    all_or_none: bool = False
    min_qty: int | None = None
    what_if: bool = False
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    oca_type: int = 0
    lmt_price_offset: float | None = None
    algo_strategy: str = ""
    algo_params: dict[str, str] = field(default_factory=dict)
    cash_qty: float | None = None
    has_conditions: bool = False
    has_combo_legs: bool = False
    extras: dict[str, str] = field(default_factory=dict)


_PLACE_ORDER_HEAD = 35  # message id through ``hidden``


def parse_place_order(fields: list[str], version: int) -> OrderRequest:
    """Parse placeOrder (message 3) as ib_insync and ibapi write it for ``version``.

    The leading block (contract through ``hidden``) is required; the long tail is read as far as it
    goes, keeping defaults for anything a shorter message leaves out.
    """
    if len(fields) < _PLACE_ORDER_HEAD:
        raise FieldError(f"placeOrder has {len(fields)} fields, at least {_PLACE_ORDER_HEAD} expected")
    # The head is read by position: this is the sim's hottest parser.
    contract = ContractQuery(
        con_id=parse_int(fields[2]), symbol=fields[3], sec_type=fields[4], last_trade_date=fields[5],
        strike=parse_float(fields[6]), right=fields[7], multiplier=fields[8], exchange=fields[9],
        primary_exchange=fields[10], currency=fields[11], local_symbol=fields[12], trading_class=fields[13],
    )
    req = OrderRequest(
        order_id=parse_int(fields[1]),
        contract=contract,
        action=fields[16].upper(),
        total_quantity=parse_decimal_qty(fields[17]),
        order_type=fields[18].upper(),
        lmt_price=parse_float(fields[19]),
        aux_price=parse_float(fields[20]),
        tif=fields[21].upper() or "DAY",
        oca_group=fields[22],
        account=fields[23],
        open_close=fields[24],
        origin=parse_int(fields[25]),
        order_ref=fields[26],
        transmit=parse_bool(fields[27]) if fields[27] else True,
        parent_id=parse_int(fields[28]),
        block_order=parse_bool(fields[29]),
        sweep_to_fill=parse_bool(fields[30]),
        display_size=parse_int(fields[31]),
        trigger_method=parse_int(fields[32]),
        outside_rth=parse_bool(fields[33]),
        hidden=parse_bool(fields[34]),
    )
    # A shorter or differently laid out tail (another client's version): the head is what matters.
    with contextlib.suppress(FieldError, IndexError):
        _parse_order_tail(Fields(fields, _PLACE_ORDER_HEAD), req, version)
    return req


def _parse_order_tail(f: Fields, req: OrderRequest, version: int) -> None:
    fields = f.rest()
    n = len(fields)
    i = 0
    if req.contract.sec_type.upper() == "BAG":
        req.has_combo_legs = True
        i += 1 + 8 * parse_int(fields[i])
        i += 1 + parse_int(fields[i])
        i += 1 + 2 * parse_int(fields[i])
    # fields[i] is the deprecated sharesAllocation
    req.discretionary_amt = parse_float(fields[i + 1])
    req.good_after_time = fields[i + 2]
    req.good_till_date = fields[i + 3]
    # faGroup, faMethod, faPercentage, faProfile
    req.model_code = fields[i + 8]
    # shortSaleSlot, designatedLocation, exemptCode, ocaType, rule80A, settlingFirm
    req.oca_type = parse_int(fields[i + 12])
    req.all_or_none = parse_bool(fields[i + 15])
    min_qty = parse_int(fields[i + 16], default=-1)
    req.min_qty = None if min_qty < 0 else min_qty
    # percentOffset … volatilityType (13 fields), then deltaNeutralOrderType, deltaNeutralAuxPrice
    i += 30
    i += 10 if fields[i] else 2
    # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, scaleInit/SubsLevelSize, increment
    req.trail_stop_price = parse_float(fields[i + 2])
    req.trailing_percent = parse_float(fields[i + 3])
    increment = parse_float(fields[i + 6])
    i += 7 + (7 if increment is not None and increment > 0 else 0)
    i += 3  # scaleTable, activeStartTime, activeStopTime
    i += 2 if fields[i] else 1  # hedgeType (+ hedgeParam)
    i += 4  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    i += 4 if parse_bool(fields[i]) else 1  # deltaNeutralContract present (+ conId, delta, price)
    if fields[i]:  # algoStrategy, its parameter count, then (tag, value) pairs
        req.algo_strategy = fields[i]
        count = parse_int(fields[i + 1])
        req.algo_params = {fields[i + 2 + 2 * k]: fields[i + 3 + 2 * k] for k in range(count)}
        i += 2 + 2 * count
    else:
        i += 1
    req.what_if = parse_bool(fields[i + 1])  # after algoId
    i += 6  # algoId, whatIf, orderMiscOptions, solicited, randomizeSize, randomizePrice
    if req.order_type == "PEG BENCH":
        i += 5
    if parse_int(fields[i]) > 0:
        req.has_conditions = True
        return  # condition layouts vary by type; nothing after them is needed
    # adjusted*, triggerPrice, lmtPriceOffset, extOperator, softDollarTier name/value, then cashQty
    if i + 3 < n:
        req.lmt_price_offset = parse_float(fields[i + 3])
    if i + 11 < n:
        req.cash_qty = parse_float(fields[i + 11])


@dataclass(frozen=True, slots=True)
class ExecutionFilterRequest:
    """reqExecutions' filter."""

    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


def parse_req_executions(fields: list[str]) -> ExecutionFilterRequest:
    """Parse reqExecutions (message 7, version 3)."""
    f = Fields(fields, start=2)
    return ExecutionFilterRequest(
        req_id=f.integer(),
        client_id=f.integer(),
        account=f.text(),
        time=f.text(),
        symbol=f.text(),
        sec_type=f.text(),
        exchange=f.text(),
        side=f.text(),
    )


def parse_req_contract_details(fields: list[str]) -> tuple[int, ContractQuery]:
    """Parse reqContractDetails (message 9, version 8): the request id and the contract."""
    f = Fields(fields, start=2)
    req_id = f.integer()
    query = read_contract(f)
    include_expired = f.flag() if f.remaining else False
    if include_expired:
        query = replace(query, include_expired=True)
    return req_id, query
