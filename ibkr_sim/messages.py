"""Outgoing TWS API messages with the exact field layouts ib_insync 0.9.86 decodes.

Layouts are those of server version 157 (the sim's default); the few fields later versions add to the
messages the sim sends are written when a higher version was negotiated.
"""

from __future__ import annotations

from functools import lru_cache

from ibkr_sim.framing import encode_body, encode_frame, fmt_float, fmt_qty
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.universe import SimContract

UNSET_D = "1.7976931348623157E308"
UNSET_I = "2147483647"
_UNDER_SEC_TYPES = {"OPT": "STK", "FUT": "IND", "FOP": "FUT"}
SYSTEM_MESSAGES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
    10197: "No market data during competing live session",
}
# Sent right after connecting, as IB Gateway does.
FARM_STATUS = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
ORDER_TYPES_TEXT = "ACTIVETIM,ADJUST,ALERT,ALLOC,DAY,FOK,GTC,GTD,IOC,LMT,MKT,NONALGO,OPG,STP,STP LMT,WHATIF"


def _b(flag: bool) -> str:
    return "1" if flag else "0"


def _d(value: float | None) -> str:
    return UNSET_D if value is None else fmt_float(value)


def _strike(inst: SimContract) -> str:
    return fmt_float(inst.strike) if inst.strike else "0"


def _position_exchange(inst: SimContract) -> str:
    if inst.exchange == "SMART" and inst.primary_exchange:
        return inst.primary_exchange
    return inst.exchange


def handshake_reply(version: int, connection_time: str) -> bytes:
    """Server version and connection time: the one frame answering ``API\\0v…``."""
    return encode_frame((str(version), connection_time))


def managed_accounts(accounts: list[str]) -> bytes:
    """managedAccounts (15)."""
    return encode_frame(("15", "1", ",".join(accounts)))


def next_valid_id(order_id: int) -> bytes:
    """nextValidId (9)."""
    return encode_frame(("9", "1", str(order_id)))


def error(req_id: int, code: int, text: str, version: int = 157) -> bytes:
    """error (4); from version 166 on with an (empty) advancedOrderRejectJson."""
    if version >= 166:
        return encode_frame(("4", "2", str(req_id), str(code), text, ""))
    return encode_frame(("4", "2", str(req_id), str(code), text))


def current_time(epoch: int) -> bytes:
    """currentTime (49)."""
    return encode_frame(("49", "1", str(epoch)))


def contract_details(req_id: int, inst: SimContract, exchange: str, version: int = 157) -> bytes:
    """contractDetails (10) for one instrument as listed on ``exchange``."""
    expiry = inst.last_trade_date
    fields = ["10"]
    if version < 164:
        fields.append("8")
    fields += [
        str(req_id), inst.symbol, inst.sec_type, expiry, _strike(inst), inst.right, exchange,
        inst.currency, inst.local_symbol, inst.trading_class or inst.symbol, inst.trading_class,
        str(inst.con_id), fmt_float(inst.min_tick),
    ]
    if version < 164:
        fields.append("1")  # mdSizeMultiplier
    fields += [
        inst.multiplier, ORDER_TYPES_TEXT, ",".join(inst.exchanges), "1", str(inst.under_con_id),
        inst.long_name, inst.primary_exchange, expiry[:6], inst.industry, inst.category, "",
        inst.time_zone_id, "", "", "", "", "0",  # tradingHours, liquidHours, evRule, evMultiplier, secIds
        "1", inst.symbol if inst.under_con_id else "", _UNDER_SEC_TYPES.get(inst.sec_type, ""),
        "", expiry, "COMMON" if inst.sec_type == "STK" else "",
    ]
    if version == 163:
        fields.append("1")
    if version >= 164:
        fields += ["1", "1", "1"]  # minSize, sizeIncrement, suggestedSizeIncrement
    return encode_frame(fields)


def contract_details_end(req_id: int) -> bytes:
    """contractDetailsEnd (52)."""
    return encode_frame(("52", "1", str(req_id)))


@lru_cache(maxsize=4096)
def _contract_text(inst: SimContract, exchange: str) -> str:
    """conId … tradingClass (11 fields, no primaryExchange), as openOrder and execDetails carry them."""
    return "\0".join((
        str(inst.con_id), inst.symbol, inst.sec_type, inst.last_trade_date, _strike(inst), inst.right,
        inst.multiplier, exchange, inst.currency, inst.local_symbol, inst.trading_class,
    ))


# Constant runs of openOrder, joined once.
_OO_AFTER_GTD = "\0".join((
    "", UNSET_D, "", "0", "", "-1", "0",  # rule80A, percentOffset, … exemptCode, auctionStrategy
    UNSET_D, UNSET_D, UNSET_D, UNSET_D, UNSET_D,  # startingPrice … stockRangeUpper
))
_OO_AFTER_OCA_TYPE = "\0".join(("0", "0", UNSET_D))  # eTradeOnly, firmQuoteOnly, nbboPriceCap
_OO_VOLATILITY = "\0".join((UNSET_D, UNSET_I, "", UNSET_D, "0", UNSET_I))  # … referencePriceType
_OO_AFTER_TRAILING_PERCENT = "\0".join((
    UNSET_D, UNSET_I, "",  # basisPoints, basisPointsType, comboLegsDescrip
    "0", "0", "0",  # combo legs, order combo legs, smart combo routing params
    UNSET_I, UNSET_I, UNSET_D,  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
    "",  # hedgeType
    "0", "", "", "0", "0",  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dnc
))


def _algo_text(strategy: str, params: dict[str, str]) -> str:
    """algoStrategy, then (when set) the parameter count and its (tag, value) pairs."""
    if not strategy:
        return ""
    pairs = [part for tag, value in params.items() for part in (tag, value)]
    return "\0".join((strategy, str(len(params)), *pairs))


@lru_cache(maxsize=256)
def _open_order_tail(
    cash_qty: str, version: int, what_if_margin: str | None, trail_stop: str = UNSET_D, offset: str = UNSET_D
) -> str:
    if what_if_margin is None:
        margins = [UNSET_D] * 9
    else:
        maint = what_if_margin
        margins = ["0", "0", "0", what_if_margin, maint, "0", what_if_margin, maint, "0"]
    tail = [
        "", *margins,  # init/maint/equity-with-loan before, change, after
        UNSET_D, UNSET_D, UNSET_D, "", "",  # commission, min, max, currency, warningText
        "0", "0",  # randomizeSize, randomizePrice
        "0",  # conditions
        "", UNSET_D, trail_stop, offset,  # adjustedOrderType, triggerPrice, trailStopPrice, lmtPriceOffset
        UNSET_D, UNSET_D, UNSET_D, "0",  # adjusted stop, stop limit, trailing amount and unit
        "", "", "",  # softDollarTier
        cash_qty, "0", "0", "0", "0",  # … discretionaryUpToLimitPrice, usePriceMgmtAlgo
    ]
    if version >= 159:
        tail.append(UNSET_I)  # duration
    if version >= 160:
        tail.append(UNSET_I)  # postToAts
    if version >= 162:
        tail.append("0")  # autoCancelParent
    if version >= 170:
        tail += [UNSET_I, UNSET_I, UNSET_D, UNSET_D, UNSET_D]
    tail.append("")  # the final NUL
    return "\0".join(tail)


def open_order_parts(
    order: SimOrder, version: int = 157, what_if_margin: str | None = None
) -> tuple[str, str]:
    """openOrder (5) as text before and after the status field, so a status change costs one concat.

    ``what_if_margin`` fills the margin fields of a what-if answer (the initial margin change).
    """
    r = order.request
    trail_stop = _d(order.trail_stop_price)
    head = "\0".join((
        "5", str(order.order_id), _contract_text(order.instrument, order.exchange),
        r.action, fmt_qty(r.total_quantity), r.order_type, _d(r.lmt_price), _d(r.aux_price), r.tif,
        r.oca_group, order.account, r.open_close or "O", str(r.origin), r.order_ref, str(order.client_id),
        str(order.perm_id), _b(r.outside_rth), _b(r.hidden), fmt_float(r.discretionary_amt or 0.0),
        r.good_after_time, "",  # sharesAllocation
        "", "", "", "", r.model_code, r.good_till_date,  # faGroup, faMethod, faPercentage, faProfile
        _OO_AFTER_GTD,
        str(r.display_size), _b(r.block_order), _b(r.sweep_to_fill), _b(r.all_or_none),
        UNSET_I if r.min_qty is None else str(r.min_qty), str(r.oca_type), _OO_AFTER_OCA_TYPE,
        str(r.parent_id), str(r.trigger_method),
        _OO_VOLATILITY, trail_stop, _d(r.trailing_percent), _OO_AFTER_TRAILING_PERCENT,
        _algo_text(r.algo_strategy, r.algo_params),
        "0",  # solicited
        _b(r.what_if), "",  # whatIf, then the status goes here
    ))
    return head, _open_order_tail(_d(r.cash_qty), version, what_if_margin, trail_stop, _d(r.lmt_price_offset))


def open_order(order: SimOrder) -> bytes:
    """openOrder (5) with the order's current status."""
    return encode_body(order.open_order_head + order.status + order.open_order_tail)


def order_status(order: SimOrder, status: str | None = None) -> bytes:
    """orderStatus (3)."""
    return encode_body(
        f"3\0{order.order_id}\0{status or order.status}\0{fmt_qty(order.filled)}\0"
        f"{fmt_qty(order.remaining)}\0{order.avg_fill_price!r}\0{order.perm_id}\0"
        f"{order.request.parent_id}\0{order.last_fill_price!r}\0{order.client_id}\0\0" "0\0"
    )


def open_order_end() -> bytes:
    """openOrderEnd (53)."""
    return encode_frame(("53", "1"))


def completed_order(order: SimOrder, version: int = 157) -> bytes:
    """completedOrder (101)."""
    r = order.request
    inst = order.instrument
    fields = [
        "101", str(inst.con_id), inst.symbol, inst.sec_type, inst.last_trade_date, _strike(inst),
        inst.right, inst.multiplier, order.exchange, inst.currency, inst.local_symbol, inst.trading_class,
        r.action, fmt_qty(r.total_quantity), r.order_type, _d(r.lmt_price), _d(r.aux_price), r.tif,
        r.oca_group, order.account, r.open_close or "O", str(r.origin), r.order_ref, str(order.perm_id),
        _b(r.outside_rth), _b(r.hidden), fmt_float(r.discretionary_amt or 0.0), r.good_after_time,
        "", "", "", "", r.model_code, r.good_till_date,  # fa fields, modelCode, goodTillDate
        "", UNSET_D, "", "0", "", "-1",  # rule80A … exemptCode
        UNSET_D, UNSET_D, UNSET_D, UNSET_D, UNSET_D,  # startingPrice … stockRangeUpper
        str(r.display_size), _b(r.sweep_to_fill), _b(r.all_or_none),
        UNSET_I if r.min_qty is None else str(r.min_qty), "0", str(r.trigger_method),
        UNSET_D, UNSET_I, "", UNSET_D,  # volatility, volatilityType, deltaNeutralOrderType, dnAuxPrice
        "0", UNSET_I, _d(r.trail_stop_price), UNSET_D, "",  # … trailingPercent, comboLegsDescrip
        "0", "0", "0",  # combo legs, order combo legs, smart combo routing params
        UNSET_I, UNSET_I, UNSET_D,  # scale fields
        "",  # hedgeType
        "", "", "0", "0",  # clearingAccount, clearingIntent, notHeld, dnc
        "",  # algoStrategy
        "0", order.status, "0", "0",  # solicited, status, randomizeSize, randomizePrice
        "0",  # conditions
        _d(r.trail_stop_price), UNSET_D, _d(r.cash_qty), "0", "0",  # … isOmsContainer
        "", fmt_qty(order.filled), "0", "0", "", "0", "0", "0",  # autoCancelDate … parentPermId
        order.completed_time, order.completed_status,
    ]
    if version >= 170:
        fields += [UNSET_I, UNSET_I, UNSET_D, UNSET_D, UNSET_D]
    return encode_frame(fields)


def completed_orders_end() -> bytes:
    """completedOrdersEnd (102)."""
    return encode_frame(("102",))


def exec_details(req_id: int, ex: SimExecution) -> bytes:
    """execDetails (11); ``req_id`` -1 for a live fill."""
    order = ex.order
    return encode_frame((
        "11", str(req_id), str(order.order_id), _contract_text(order.instrument, ex.venue), ex.exec_id,
        ex.time, order.account, ex.venue, ex.side, fmt_qty(ex.shares), repr(ex.price), str(order.perm_id),
        str(order.client_id), "0", fmt_qty(ex.cum_qty), repr(ex.avg_price), order.request.order_ref, "", "",
        order.request.model_code, str(ex.liquidity),
    ))


def exec_details_end(req_id: int) -> bytes:
    """execDetailsEnd (55)."""
    return encode_frame(("55", "1", str(req_id)))


def commission_report(ex: SimExecution) -> bytes:
    """commissionReport (59): after the execDetails with the same execId."""
    realized = UNSET_D if ex.realized_pnl is None else f"{ex.realized_pnl:.2f}"
    return encode_frame((
        "59", "1", ex.exec_id, fmt_float(ex.commission), ex.order.instrument.currency, realized,
        UNSET_D, "0",
    ))


def position(account: str, inst: SimContract, quantity: float, avg_cost: float) -> bytes:
    """position (61)."""
    return encode_frame((
        "61", "3", account, str(inst.con_id), inst.symbol, inst.sec_type, inst.last_trade_date,
        _strike(inst), inst.right, inst.multiplier, _position_exchange(inst), inst.currency,
        inst.local_symbol, inst.trading_class, fmt_qty(quantity), fmt_float(round(avg_cost, 8)),
    ))


def position_end() -> bytes:
    """positionEnd (62)."""
    return encode_frame(("62", "1"))


def update_portfolio(
    account: str, inst: SimContract, *, quantity: float, price: float, value: float, avg_cost: float,
    unrealized: float, realized: float,
) -> bytes:
    """updatePortfolio (7)."""
    return encode_frame((
        "7", "8", str(inst.con_id), inst.symbol, inst.sec_type, inst.last_trade_date, _strike(inst),
        inst.right, inst.multiplier, inst.primary_exchange, inst.currency, inst.local_symbol,
        inst.trading_class, fmt_qty(quantity), fmt_float(price), f"{value:.2f}",
        fmt_float(round(avg_cost, 8)), f"{unrealized:.2f}", f"{realized:.2f}", account,
    ))


def update_account_value(key: str, value: str, currency: str, account: str) -> bytes:
    """updateAccountValue (6)."""
    return encode_frame(("6", "2", key, value, currency, account))


def update_account_time(hh_mm: str) -> bytes:
    """updateAccountTime (8)."""
    return encode_frame(("8", "1", hh_mm))


def account_download_end(account: str) -> bytes:
    """accountDownloadEnd (54)."""
    return encode_frame(("54", "1", account))


def account_update_multi(req_id: int, account: str, model: str, key: str, *, value: str, cur: str) -> bytes:
    """accountUpdateMulti (73)."""
    return encode_frame(("73", "1", str(req_id), account, model, key, value, cur))


def account_update_multi_end(req_id: int) -> bytes:
    """accountUpdateMultiEnd (74)."""
    return encode_frame(("74", "1", str(req_id)))


def position_multi(req_id: int, account: str, inst: SimContract, quantity: float, avg_cost: float) -> bytes:
    """positionMulti (71)."""
    return encode_frame((
        "71", "1", str(req_id), account, str(inst.con_id), inst.symbol, inst.sec_type,
        inst.last_trade_date, _strike(inst), inst.right, inst.multiplier, _position_exchange(inst),
        inst.currency, inst.local_symbol, inst.trading_class, fmt_qty(quantity),
        fmt_float(round(avg_cost, 8)), "",
    ))


def position_multi_end(req_id: int) -> bytes:
    """positionMultiEnd (72)."""
    return encode_frame(("72", "1", str(req_id)))


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> bytes:
    """accountSummary (63)."""
    return encode_frame(("63", "1", str(req_id), account, tag, value, currency))


def account_summary_end(req_id: int) -> bytes:
    """accountSummaryEnd (64)."""
    return encode_frame(("64", "1", str(req_id)))


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> bytes:
    """tickPrice (1) with its size."""
    return encode_frame(("1", "6", str(req_id), str(tick_type), fmt_float(price), fmt_qty(size), "0"))


def tick_snapshot_end(req_id: int) -> bytes:
    """tickSnapshotEnd (57)."""
    return encode_frame(("57", "1", str(req_id)))


def market_data_type(req_id: int, data_type: int) -> bytes:
    """marketDataType (58)."""
    return encode_frame(("58", "1", str(req_id), str(data_type)))


def tick_size(req_id: int, tick_type: int, size: float) -> bytes:
    """tickSize (2)."""
    return encode_frame(("2", "6", str(req_id), str(tick_type), fmt_qty(size)))
