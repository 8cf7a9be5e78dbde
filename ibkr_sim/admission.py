"""Whether a placeOrder can be accepted: its contract, its account, its own fields (IB's error codes)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ibkr_sim.market import conforms
from ibkr_sim.matching import Rejection, validate, validate_trailing
from ibkr_sim.requests import OrderRequest
from ibkr_sim.universe import SimContract, Universe

PRICE_TEXT = "The price does not conform to the minimum price variation for this contract."
NO_SECURITY = "No security definition has been found for the request"
FRACTIONAL_TEXT = "Fractional-sized order cannot be placed via API. Please use desktop version to place this order."
ADAPTIVE_PRIORITIES = frozenset({"Patient", "Normal", "Urgent"})
ADAPTIVE_ORDER_TYPES = frozenset({"MKT", "LMT"})


def resolve_contract(universe: Universe, req: OrderRequest) -> tuple[SimContract | None, Rejection | None]:
    """The one listed instrument the order names, or error 200 (unknown or ambiguous)."""
    matches = universe.lookup(req.contract)
    if not matches:
        return None, Rejection(200, NO_SECURITY)
    if len(matches) > 1:
        name = req.contract.describe()
        return None, Rejection(200, f"The contract description specified for {name} is ambiguous.")
    return matches[0], None


def check_order(req: OrderRequest, inst: SimContract) -> Rejection | None:
    """The order's own fields: exchange, action, size, type, time in force, prices on the tick grid."""
    if not req.contract.exchange:
        return Rejection(321, "Error validating request.-'bN' : cause - Missing order exchange")
    rejection = validate(
        req.action, req.total_quantity, req.order_type, req.tif, lmt=req.lmt_price, aux=req.aux_price
    )
    if rejection is None:
        rejection = validate_trailing(
            req.order_type, amount=req.aux_price, percent=req.trailing_percent, lmt=req.lmt_price,
            offset=req.lmt_price_offset,
        )
    if rejection is None:
        rejection = check_algo(req, inst)
    if rejection is not None:
        return rejection
    if inst.sec_type != "CASH" and req.total_quantity != int(req.total_quantity):
        # IBKR refuses fractional quantities from the API (forex amounts are not shares).
        return Rejection(10243, FRACTIONAL_TEXT)
    # A trailing stop's auxPrice is a distance, and its limit follows the stop: neither is a price to check.
    prices = (req.lmt_price, req.aux_price) if req.order_type not in ("TRAIL", "TRAIL LIMIT") else ()
    for price in prices:
        if price is not None and not conforms(price, inst.min_tick):
            return Rejection(110, PRICE_TEXT)
    return None


def check_algo(req: OrderRequest, inst: SimContract) -> Rejection | None:
    """IB's Adaptive algo: stocks only, market or limit orders, priority Patient, Normal or Urgent.

    Other algo strategies are accepted and worked as plain orders.
    """
    if req.algo_strategy != "Adaptive":
        return None
    if inst.sec_type != "STK":
        return Rejection(
            201, f"Order rejected - reason:The Adaptive algo is not available for security type {inst.sec_type}"
        )
    if req.order_type not in ADAPTIVE_ORDER_TYPES:
        return Rejection(201, f"Order rejected - reason:The Adaptive algo does not support {req.order_type} orders")
    priority = req.algo_params.get("adaptivePriority", "Normal")
    if priority not in ADAPTIVE_PRIORITIES:
        return Rejection(201, f"Order rejected - reason:Invalid adaptivePriority {priority!r}")
    return None


def account_for(req: OrderRequest, accounts: tuple[str, ...]) -> tuple[str, Rejection | None]:
    """The account the order books to: the one named (if managed), or the only managed one."""
    if not req.account:
        if len(accounts) == 1:
            return accounts[0], None
        return "", Rejection(436, "You must specify an allocation (either a single account, group, or profile).")
    if req.account not in accounts:
        return "", Rejection(201, f"Order rejected - reason:Account {req.account} is not managed")
    return req.account, None


def good_till(text: str, default_zone: str) -> tuple[float | None, Rejection | None]:
    """A goodTillDate as epoch seconds: ``YYYYMMDD HH:MM:SS [zone]`` (the sim's zone when none is
    given) or ``YYYYMMDD-HH:MM:SS`` in UTC; a date it cannot read is error 201."""
    text = text.strip()
    zone = default_zone
    if len(text) > 8 and text[8] == "-":
        stamp, zone = text[:17].replace("-", " ", 1), "UTC"
    else:
        parts = text.split()
        stamp = " ".join(parts[:2])
        if len(parts) > 2:
            zone = parts[2]
    try:
        moment = datetime.strptime(stamp, "%Y%m%d %H:%M:%S")
        return moment.replace(tzinfo=ZoneInfo(zone)).timestamp(), None
    except (ValueError, ZoneInfoNotFoundError):
        return None, Rejection(201, f"Order rejected - reason:Invalid goodTillDate {text!r}")
