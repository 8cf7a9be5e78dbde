"""Whether a placeOrder can be accepted: its contract, its account, its own fields (IB's error codes)."""

from __future__ import annotations

from ibkr_sim.market import conforms
from ibkr_sim.matching import Rejection, validate
from ibkr_sim.requests import OrderRequest
from ibkr_sim.universe import SimContract, Universe

PRICE_TEXT = "The price does not conform to the minimum price variation for this contract."
NO_SECURITY = "No security definition has been found for the request"
FRACTIONAL_TEXT = "Fractional-sized order cannot be placed via API. Please use desktop version to place this order."


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
    if rejection is not None:
        return rejection
    if inst.sec_type != "CASH" and req.total_quantity != int(req.total_quantity):
        # IBKR refuses fractional quantities from the API (forex amounts are not shares).
        return Rejection(10243, FRACTIONAL_TEXT)
    for price in (req.lmt_price, req.aux_price):
        if price is not None and not conforms(price, inst.min_tick):
            return Rejection(110, PRICE_TEXT)
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
