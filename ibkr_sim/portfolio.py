"""Positions, average costs, cash and account values that follow fills and commissions.

Conventions follow IB: a position's ``avg_cost`` is per contract and includes the multiplier and the
commissions paid to open it (a stock bought 100 @ 10.00 with $1 commission has avgCost 10.01); futures
move cash only by realized P&L and commissions (they are marked to market).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ibkr_sim.universe import SimContract

BASE_CURRENCY = "USD"
# Rough conversion of other currencies into the base; enough for NetLiquidation of a made-up account.
FX_TO_BASE = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CAD": 0.73, "CHF": 1.12, "JPY": 0.0067}
# Initial margin as a fraction of market value / notional, per secType (maintenance is 80 % of it).
MARGIN_RATES = {"STK": 0.25, "OPT": 1.0, "FUT": 0.06, "CASH": 0.03}


@dataclass(frozen=True, slots=True)
class CommissionRate:
    """A per-order commission schedule: per unit, a minimum, a cap as a fraction of trade value."""

    per_unit: float = 0.0
    minimum: float = 0.0
    max_fraction: float | None = None
    fraction_of_value: float = 0.0

    def for_order(self, quantity: float, value: float) -> float:
        """Commission for an order of ``quantity`` units worth ``value`` so far."""
        if quantity <= 0:
            return 0.0
        amount = self.per_unit * quantity + self.fraction_of_value * value
        amount = max(amount, self.minimum)
        if self.max_fraction is not None and value > 0:
            amount = min(amount, self.max_fraction * value)
        return round(amount, 4)


DEFAULT_COMMISSIONS: dict[str, CommissionRate] = {
    "STK": CommissionRate(per_unit=0.005, minimum=1.0, max_fraction=0.01),
    "OPT": CommissionRate(per_unit=0.65, minimum=1.0),
    "FUT": CommissionRate(per_unit=0.85, minimum=0.85),
    "CASH": CommissionRate(minimum=2.0, fraction_of_value=0.00002),
}


@dataclass(slots=True)
class Position:
    """One account's holding of one contract."""

    account: str
    instrument: SimContract
    quantity: float = 0.0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0
    # Average cost without commissions: what futures are marked to market against.
    avg_trade_cost: float = 0.0

    def market_value(self, price: float) -> float:
        """Market value at ``price``."""
        return self.quantity * price * self.instrument.multiplier_value

    def unrealized_pnl(self, price: float) -> float:
        """Unrealized P&L at ``price`` against the average cost."""
        return self.market_value(price) - self.quantity * self.avg_cost

    def variation(self, price: float) -> float:
        """Mark-to-market gain against the traded prices (commissions left out, they are paid in cash)."""
        return self.market_value(price) - self.quantity * self.avg_trade_cost


@dataclass(slots=True)
class Account:
    """Cash by currency and positions by conId."""

    name: str
    initial_cash: float
    cash: dict[str, float] = field(default_factory=dict)
    positions: dict[int, Position] = field(default_factory=dict)
    realized_pnl: float = 0.0
    commissions: float = 0.0

    def __post_init__(self) -> None:
        self.cash.setdefault(BASE_CURRENCY, self.initial_cash)


class Portfolio:
    """Every managed account's state."""

    def __init__(self, accounts: list[str], initial_cash: float = 1_000_000.0) -> None:
        self.initial_cash = initial_cash
        self.accounts: dict[str, Account] = {a: Account(a, initial_cash) for a in accounts}

    def account(self, name: str) -> Account:
        """The named account (created empty if it is not known yet)."""
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(name, self.initial_cash)
        return acct

    def apply_fill(
        self, account: str, inst: SimContract, side: int, quantity: float, *, price: float, commission: float
    ) -> tuple[Position, float | None]:
        """Book a fill; return the position and the fill's realized P&L (``None`` if it only opened)."""
        acct = self.account(account)
        pos = acct.positions.get(inst.con_id)
        if pos is None:
            pos = acct.positions[inst.con_id] = Position(account, inst)
        pos.instrument = inst
        mult = inst.multiplier_value
        unit_cost = price * mult
        signed = side * quantity
        realized: float | None = None
        variation = 0.0
        if pos.quantity == 0 or (pos.quantity > 0) == (side > 0):
            held = abs(pos.quantity)
            total = held * pos.avg_cost + quantity * unit_cost + commission
            traded = held * pos.avg_trade_cost + quantity * unit_cost
            pos.quantity += signed
            pos.avg_cost = total / abs(pos.quantity)
            pos.avg_trade_cost = traded / abs(pos.quantity)
        else:
            closing = min(quantity, abs(pos.quantity))
            opening = quantity - closing
            close_commission = commission * closing / quantity
            direction = 1.0 if pos.quantity > 0 else -1.0
            realized = (unit_cost - pos.avg_cost) * closing * direction - close_commission
            variation = (unit_cost - pos.avg_trade_cost) * closing * direction
            pos.realized_pnl += realized
            acct.realized_pnl += realized
            pos.quantity += signed
            if abs(pos.quantity) < 1e-9:
                pos.quantity = 0.0
                pos.avg_cost = pos.avg_trade_cost = 0.0
            elif opening > 0:
                pos.avg_cost = unit_cost + (commission - close_commission) / opening
                pos.avg_trade_cost = unit_cost
        currency = inst.currency
        acct.cash[currency] = acct.cash.get(currency, 0.0) - commission
        if inst.sec_type == "FUT":
            acct.cash[currency] += variation
        else:
            acct.cash[currency] -= signed * unit_cost
        acct.commissions += commission
        return pos, realized

    def values(self, account: str, price_of: Callable[[SimContract], float]) -> list[tuple[str, str, str]]:
        """Account values as ``(tag, value, currency)``, in the base currency unless said otherwise."""
        acct = self.account(account)
        cash = sum(amount * FX_TO_BASE.get(cur, 1.0) for cur, amount in acct.cash.items())
        securities = 0.0
        futures_pnl = 0.0
        gross = 0.0
        unrealized = 0.0
        init_margin = 0.0
        for pos in acct.positions.values():
            if pos.quantity == 0:
                continue
            inst = pos.instrument
            rate = FX_TO_BASE.get(inst.currency, 1.0)
            price = price_of(inst)
            value = pos.market_value(price) * rate
            pnl = pos.unrealized_pnl(price) * rate
            unrealized += pnl
            init_margin += abs(value) * MARGIN_RATES.get(inst.sec_type, 0.25)
            if inst.sec_type == "FUT":
                futures_pnl += pos.variation(price) * rate
            else:
                securities += value
                gross += abs(value)
        net_liq = cash + securities + futures_pnl
        maint_margin = 0.8 * init_margin
        available = net_liq - init_margin
        excess = net_liq - maint_margin
        cushion = excess / net_liq if net_liq else 0.0
        usd = BASE_CURRENCY
        money = {
            "NetLiquidation": net_liq,
            "TotalCashValue": cash,
            "SettledCash": cash,
            "EquityWithLoanValue": net_liq,
            "GrossPositionValue": gross,
            "InitMarginReq": init_margin,
            "MaintMarginReq": maint_margin,
            "FullInitMarginReq": init_margin,
            "FullMaintMarginReq": maint_margin,
            "AvailableFunds": available,
            "FullAvailableFunds": available,
            "ExcessLiquidity": excess,
            "FullExcessLiquidity": excess,
            "BuyingPower": max(available, 0.0) * 4.0,
            "UnrealizedPnL": unrealized,
            "RealizedPnL": acct.realized_pnl,
        }
        out = [("AccountCode", account, ""), ("AccountType", "INDIVIDUAL", ""), ("Currency", usd, usd)]
        out += [(tag, f"{value:.2f}", usd) for tag, value in money.items()]
        out.append(("Cushion", f"{cushion:.6f}", ""))
        for cur, amount in sorted(acct.cash.items()):
            out.append(("CashBalance", f"{amount:.2f}", cur))
        out.append(("CashBalance", f"{cash:.2f}", "BASE"))
        return out
